//! Optimisation: AdamW with decoupled weight decay, gradient-norm clipping and
//! learning-rate schedules.

pub mod adamw;
pub mod schedule;

pub use adamw::{AdamW, AdamWConfig};
pub use schedule::{LrSchedule, ScheduleKind};
