//! Several processes training one model: data parallelism over MPI.
//!
//! `mpirun -np N lmforge train ...` (or `srun`) starts N ranks. Each rank
//! holds the whole model and draws its own batches; after the backward pass
//! the gradients are summed across ranks (all-reduce), so every rank makes
//! the same update. With ZeRO-1 (`--zero 1`) each rank keeps AdamW's moments
//! for one shard of the parameters only: the gradients are reduce-scattered
//! (each rank receives the sum of its shard), each rank updates its shard, and
//! the updated weights are all-gathered.
//!
//! ```text
//! all-reduce      every rank: g = sum over ranks of g_r           (2 (N-1)/N x P floats sent per rank)
//! reduce-scatter  rank r:     g[shard r] = sum over ranks of g_r[shard r]   ((N-1)/N x P)
//! all-gather      every rank: p[shard s] from rank s, for every s            ((N-1)/N x P)
//! ```
//!
//! Shards are whole chunks of [`NORM_CHUNK`] gradients, so the per-chunk sums
//! of squares of the gradient norm are the same numbers whichever rank
//! computes them, and ZeRO-1 gives the same bits as plain data parallelism.
//!
//! The MPI library is used only when built with `--features mpi` and started
//! by a launcher; [`World::single`] is the one-process world everything else
//! runs in. Every collective waits at most [`World::timeout`] (environment
//! variable `LMFORGE_DIST_TIMEOUT_S`, default 300 s): a rank that died or
//! hangs makes the others stop with an error instead of waiting for ever.

#[cfg(feature = "mpi")]
mod mpi_world;

use crate::backend::NORM_CHUNK;
use crate::error::{Error, Result};
use std::ops::Range;
use std::time::Duration;

/// How long a collective waits for the other ranks unless `LMFORGE_DIST_TIMEOUT_S` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// What the launcher (Open MPI's mpirun, MPICH/Hydra, Slurm's srun) says
/// about this process, read from the environment it sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub size: usize,
    pub rank: usize,
    /// Rank among the processes on this node (which GPU to take).
    pub local_rank: usize,
    /// Processes on this node (how many cores are this rank's).
    pub local_size: usize,
}

fn env_usize(names: &[&str]) -> Option<usize> {
    names
        .iter()
        .find_map(|name| std::env::var(name).ok()?.trim().parse().ok())
}

impl Launch {
    /// The launch this process is part of; `None` when started alone.
    pub fn from_env() -> Option<Launch> {
        let size = env_usize(&["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"])?;
        let rank = env_usize(&["OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"]).unwrap_or(0);
        let local_rank = env_usize(&[
            "OMPI_COMM_WORLD_LOCAL_RANK",
            "MPI_LOCALRANKID",
            "SLURM_LOCALID",
        ]);
        let local_size = env_usize(&["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"]);
        (size > 1).then_some(Launch {
            size,
            rank,
            local_rank: local_rank.unwrap_or(0),
            local_size: local_size.unwrap_or(1).max(1),
        })
    }
}

/// The collective wait from `LMFORGE_DIST_TIMEOUT_S`, or [`DEFAULT_TIMEOUT`].
fn timeout_from_env() -> Result<Duration> {
    match std::env::var("LMFORGE_DIST_TIMEOUT_S") {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(text) => match text.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
            _ => Err(Error::Config(format!(
                "LMFORGE_DIST_TIMEOUT_S={text:?}: expected a positive number of seconds"
            ))),
        },
    }
}

enum Imp {
    Single,
    #[cfg(feature = "mpi")]
    Mpi(mpi_world::Mpi),
}

/// The processes training together, and the collectives between them.
/// Buffers are host slices; counts and offsets are precomputed
/// ([`Shards`]), so no collective allocates.
pub struct World {
    imp: Imp,
    /// The longest a collective waits for the other ranks.
    pub timeout: Duration,
}

static SINGLE: World = World {
    imp: Imp::Single,
    timeout: DEFAULT_TIMEOUT,
};

impl World {
    /// One process alone.
    pub fn single() -> &'static World {
        &SINGLE
    }

    /// The world the launcher started: MPI when this process is one of
    /// several (refused with the way to build it when MPI is not built in),
    /// otherwise one process alone.
    pub fn from_env() -> Result<World> {
        let Some(launch) = Launch::from_env() else {
            return Ok(World {
                imp: Imp::Single,
                timeout: DEFAULT_TIMEOUT,
            });
        };
        let timeout = timeout_from_env()?;
        #[cfg(feature = "mpi")]
        {
            let imp = Imp::Mpi(mpi_world::Mpi::init(launch)?);
            Ok(World { imp, timeout })
        }
        #[cfg(not(feature = "mpi"))]
        {
            let _ = timeout;
            Err(Error::Distributed(format!(
                "this process is rank {} of {} started by mpirun or srun, but lmforge was built \
                 without MPI: build it with `cargo build --release --features mpi` (needs an MPI \
                 library such as Debian's libopenmpi-dev, and clang), or start one process",
                launch.rank, launch.size
            )))
        }
    }

    pub fn rank(&self) -> usize {
        match &self.imp {
            Imp::Single => 0,
            #[cfg(feature = "mpi")]
            Imp::Mpi(m) => m.rank,
        }
    }

    pub fn size(&self) -> usize {
        match &self.imp {
            Imp::Single => 1,
            #[cfg(feature = "mpi")]
            Imp::Mpi(m) => m.size,
        }
    }

    /// Rank 0 writes the run's files.
    pub fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// Stop every rank at once (after an error on this one): the others may be
    /// waiting in a collective this rank will never join.
    pub fn abort(&self, code: i32) -> ! {
        match &self.imp {
            Imp::Single => std::process::exit(code),
            #[cfg(feature = "mpi")]
            Imp::Mpi(m) => m.abort(code),
        }
    }

    /// `recv = sum over ranks of send` (every rank gets the sum).
    pub fn all_reduce_sum(&self, send: &[f32], recv: &mut [f32], what: &str) -> Result<()> {
        match &self.imp {
            Imp::Single => recv.copy_from_slice(send),
            #[cfg(feature = "mpi")]
            Imp::Mpi(m) => m.all_reduce_f32(send, recv, (what, self.timeout))?,
        }
        let _ = what;
        Ok(())
    }

    /// `recv = sum over ranks of send`, in f64 (losses, flags).
    pub fn all_reduce_sum_f64(&self, send: &[f64], recv: &mut [f64], what: &str) -> Result<()> {
        match &self.imp {
            Imp::Single => recv.copy_from_slice(send),
            #[cfg(feature = "mpi")]
            Imp::Mpi(m) => m.all_reduce_f64(send, recv, (what, self.timeout))?,
        }
        let _ = what;
        Ok(())
    }

    /// `recv` (this rank's shard, `shards.counts[rank]` long) = the sum over
    /// ranks of their `send[shard]`.
    pub fn reduce_scatter_sum(
        &self,
        send: &[f32],
        recv: &mut [f32],
        shards: &Shards,
        what: &str,
    ) -> Result<()> {
        match &self.imp {
            Imp::Single => recv.copy_from_slice(&send[..recv.len()]),
            #[cfg(feature = "mpi")]
            Imp::Mpi(m) => {
                m.reduce_scatter_f32(send, recv, &shards.counts, (what, self.timeout))?
            }
        }
        let _ = (shards, what);
        Ok(())
    }

    /// `recv[shard s] = rank s's send`, for every rank `s`, on every rank.
    pub fn all_gather<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
        (counts, displs): (&[i32], &[i32]),
        what: &str,
    ) -> Result<()> {
        match &self.imp {
            Imp::Single => recv[..send.len()].copy_from_slice(send),
            #[cfg(feature = "mpi")]
            Imp::Mpi(m) => m.all_gather(send, recv, (counts, displs), (what, self.timeout))?,
        }
        let _ = (counts, displs, what);
        Ok(())
    }

    /// Rank 0's `recv[shard s] = rank s's send`; other ranks pass `recv = None`.
    pub fn gather_to_root(
        &self,
        send: &[f32],
        recv: Option<&mut [f32]>,
        shards: &Shards,
        what: &str,
    ) -> Result<()> {
        match &self.imp {
            Imp::Single => {
                if let Some(recv) = recv {
                    recv[..send.len()].copy_from_slice(send)
                }
            }
            #[cfg(feature = "mpi")]
            Imp::Mpi(m) => m.gather_to_root(send, recv, shards, (what, self.timeout))?,
        }
        let _ = (shards, what);
        Ok(())
    }
}

/// A type the collectives move: `f32` (gradients, weights) or `f64` (norm partial sums).
pub trait Element: Copy + Send + Sync + 'static {
    const IS_F64: bool;
}

impl Element for f32 {
    const IS_F64: bool = false;
}

impl Element for f64 {
    const IS_F64: bool = true;
}

/// How `len` trained parameters are cut into one shard per rank: whole
/// [`NORM_CHUNK`]s, as even as that allows (the last shards may be shorter
/// or empty), with the counts and offsets the collectives take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shards {
    pub ranges: Vec<Range<usize>>,
    pub counts: Vec<i32>,
    pub displs: Vec<i32>,
    /// The same cut counted in norm chunks.
    pub chunk_counts: Vec<i32>,
    pub chunk_displs: Vec<i32>,
}

impl Shards {
    pub fn new(len: usize, ranks: usize) -> Result<Shards> {
        let chunks = len.div_ceil(NORM_CHUNK);
        let per_rank = chunks.div_ceil(ranks.max(1));
        let ranges: Vec<Range<usize>> = (0..ranks)
            .map(|r| {
                let lo = (r * per_rank * NORM_CHUNK).min(len);
                lo..((r + 1) * per_rank * NORM_CHUNK).min(len)
            })
            .collect();
        let count = |n: usize| {
            i32::try_from(n).map_err(|_| {
                Error::Config(format!(
                    "{len} trained parameters: a shard of {n} values is more than MPI counts in one message"
                ))
            })
        };
        let mut shards = Shards {
            ranges: Vec::new(),
            counts: Vec::new(),
            displs: Vec::new(),
            chunk_counts: Vec::new(),
            chunk_displs: Vec::new(),
        };
        for r in &ranges {
            shards.counts.push(count(r.len())?);
            shards.displs.push(count(r.start)?);
            shards
                .chunk_counts
                .push(count(r.len().div_ceil(NORM_CHUNK))?);
            shards.chunk_displs.push(count(r.start / NORM_CHUNK)?);
        }
        shards.ranges = ranges;
        Ok(shards)
    }

    pub fn len(&self) -> usize {
        self.ranges.last().map_or(0, |r| r.end)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Norm chunks over all shards.
    pub fn chunks(&self) -> usize {
        self.len().div_ceil(NORM_CHUNK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_whole_chunks_covering_everything_once() {
        for (len, ranks) in [
            (10, 2),
            (3 * NORM_CHUNK + 5, 2),
            (5 * NORM_CHUNK, 3),
            (NORM_CHUNK, 4),
        ] {
            let s = Shards::new(len, ranks).unwrap();
            assert_eq!(s.ranges.len(), ranks);
            assert_eq!(s.ranges[0].start, 0);
            assert_eq!(s.len(), len);
            for pair in s.ranges.windows(2) {
                assert_eq!(pair[0].end, pair[1].start, "{len} over {ranks}");
                assert!(pair[0].end % NORM_CHUNK == 0 || pair[0].end == len);
            }
            let chunks: i32 = s.chunk_counts.iter().sum();
            assert_eq!(chunks as usize, s.chunks());
        }
    }

    #[test]
    fn the_single_world_copies() {
        let w = World::single();
        assert_eq!((w.rank(), w.size(), w.is_root()), (0, 1, true));
        let mut out = [0.0f32; 3];
        w.all_reduce_sum(&[1.0, 2.0, 3.0], &mut out, "test")
            .unwrap();
        assert_eq!(out, [1.0, 2.0, 3.0]);
    }
}
