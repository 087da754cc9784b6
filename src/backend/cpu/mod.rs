//! The CPU backend: the thread pool and the matrix product every linear layer
//! uses. The layer kernels themselves live beside their math in `model/`.

pub mod math;
pub mod matmul;

use crate::error::{Error, Result};

/// Run `work` on a thread of the global pool and wait for it.
///
/// A parallel loop started by a pool thread hands half its work straight to
/// the other workers; started from outside the pool, every loop is queued and
/// its caller sleeps until it finishes, two thread wake-ups per loop. A
/// training step runs hundreds of loops, so it runs here, on the pool.
pub fn on_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| work())
}

/// Start the global thread pool with `threads` workers (`None`: one per core).
/// Results are deterministic for a given thread count. Returns the count in use.
pub fn init_threads(threads: Option<usize>) -> Result<usize> {
    if let Some(0) = threads {
        return Err(Error::Config("--threads must be at least 1".into()));
    }
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        builder = builder.num_threads(n);
    }
    // A pool that already exists (a second call in one process, e.g. in tests) is kept.
    let _ = builder.build_global();
    Ok(rayon::current_num_threads())
}
