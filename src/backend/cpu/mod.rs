//! The CPU backend: the thread pool and the matrix product every linear layer
//! uses. The layer kernels themselves live beside their math in `model/`.

pub mod math;
pub mod matmul;

use crate::error::{Error, Result};

/// Run `work` on a thread of the global pool, with the other workers kept
/// awake until it returns.
///
/// A parallel loop started by a pool thread hands half its work straight to
/// the other workers; started from outside the pool, every loop is queued and
/// its caller sleeps until it finishes. And a worker that runs out of work
/// soon goes to sleep, so the next loop first has to wake it (tens of
/// microseconds on a virtual machine, against loops of a few hundred). A
/// training step runs hundreds of loops, so it runs here: on the pool, with
/// every other worker polling for work (as OpenMP's threads spin between
/// parallel regions) instead of sleeping.
pub fn on_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = &AtomicBool::new(false);
    rayon::scope(|scope| {
        let owner = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            scope.spawn(move |_| {
                // Never on the thread running `work`: it would wait here for
                // `done`, which only `work`, further down its stack, can set.
                if rayon::current_thread_index() == owner {
                    return;
                }
                let mut idle_polls = 0u32;
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() == Some(rayon::Yield::Executed) {
                        idle_polls = 0;
                    } else if idle_polls % 64 == 63 {
                        // Let the OS run anything else waiting for this core
                        // (more threads than cores, other processes).
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                    idle_polls = idle_polls.wrapping_add(1);
                }
            });
        }
        let result = work();
        done.store(true, Ordering::Release);
        result
    })
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

#[cfg(test)]
mod tests {
    use super::on_pool;
    use rayon::prelude::*;
    use std::time::Duration;

    fn parallel_sum(n: u64) -> u64 {
        (0..n).into_par_iter().map(|i| i * i).sum()
    }

    #[test]
    fn on_pool_returns_what_the_work_computes() {
        let expected: u64 = (0..100_000u64).map(|i| i * i).sum();
        assert_eq!(on_pool(|| parallel_sum(100_000)), expected);
        // Nested: work already on the pool.
        assert_eq!(on_pool(|| on_pool(|| parallel_sum(100_000))), expected);
    }

    /// Several threads entering the pool at once, each keeping the other
    /// workers polling, all finish (no worker waits on a flag that only work
    /// further down its own stack could set).
    #[test]
    fn concurrent_callers_all_finish() {
        let (done, finished) = std::sync::mpsc::channel();
        for caller in 0..4u64 {
            let done = done.clone();
            std::thread::spawn(move || {
                for round in 0..50 {
                    let n = 1000 + caller * 100 + round;
                    let expected: u64 = (0..n).map(|i| i * i).sum();
                    assert_eq!(on_pool(|| parallel_sum(n)), expected);
                }
                done.send(caller).unwrap();
            });
        }
        for _ in 0..4 {
            finished
                .recv_timeout(Duration::from_secs(120))
                .expect("a caller of on_pool never finished");
        }
    }
}
