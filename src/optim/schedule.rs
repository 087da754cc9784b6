//! Learning-rate schedules (nanoGPT's `get_lr`).
//!
//! ```text
//! warmup  (it < warmup_iters):   lr * (it + 1) / (warmup_iters + 1)
//! cosine  (after warmup):        min_lr + 0.5 (1 + cos(pi * r)) (lr - min_lr),
//!                                r = (it - warmup_iters) / (decay_iters - warmup_iters)
//! after decay_iters:             min_lr
//! constant (after warmup):       lr
//! ```

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    Constant,
    Cosine,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    pub lr: f32,
    pub min_lr: f32,
    pub warmup_iters: u64,
    pub decay_iters: u64,
}

impl LrSchedule {
    /// The learning rate for iteration `it` (counting from 0).
    pub fn at(&self, it: u64) -> f32 {
        if it < self.warmup_iters {
            return self.lr * (it + 1) as f32 / (self.warmup_iters + 1) as f32;
        }
        match self.kind {
            ScheduleKind::Constant => self.lr,
            ScheduleKind::Cosine => {
                if it >= self.decay_iters || self.decay_iters <= self.warmup_iters {
                    return self.min_lr;
                }
                let r =
                    (it - self.warmup_iters) as f64 / (self.decay_iters - self.warmup_iters) as f64;
                let coeff = 0.5 * (1.0 + (std::f64::consts::PI * r).cos());
                (self.min_lr as f64 + coeff * (self.lr - self.min_lr) as f64) as f32
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_min() {
        let s = LrSchedule {
            kind: ScheduleKind::Cosine,
            lr: 1e-3,
            min_lr: 1e-4,
            warmup_iters: 100,
            decay_iters: 2000,
        };
        assert!((s.at(0) - 1e-3 / 101.0).abs() < 1e-9);
        assert!((s.at(99) - 1e-3 * 100.0 / 101.0).abs() < 1e-9);
        assert!((s.at(100) - 1e-3).abs() < 1e-9);
        assert!((s.at(1050) - 5.5e-4).abs() < 1e-7);
        assert_eq!(s.at(2000), 1e-4);
        assert_eq!(s.at(5000), 1e-4);
        assert!(s.at(500) > s.at(600));
    }

    #[test]
    fn constant_stays_after_warmup() {
        let s = LrSchedule {
            kind: ScheduleKind::Constant,
            lr: 1e-2,
            min_lr: 0.0,
            warmup_iters: 0,
            decay_iters: 10,
        };
        assert_eq!(s.at(0), 1e-2);
        assert_eq!(s.at(50), 1e-2);
    }
}
