//! The CPU backend: the thread pool and the matrix product every linear layer
//! uses. The layer kernels themselves live beside their math in `model/`.

pub mod math;
pub mod matmul;

use crate::error::{Error, Result};

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
