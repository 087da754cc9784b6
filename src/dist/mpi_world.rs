//! The MPI world (`--features mpi`): rsmpi starts MPI and names the ranks;
//! the collectives are MPI's non-blocking ones, tested until done or until
//! the timeout, so a rank that died or hangs cannot keep the others waiting
//! for ever. The raw calls are here because rsmpi has no reduce-scatter
//! with uneven counts and no way to give up on a blocking collective.

use super::{Element, Launch, Shards};
use crate::error::{Error, Result};
use ::mpi::ffi;
use ::mpi::topology::{Communicator, SimpleCommunicator};
use ::mpi::traits::AsRaw;
use std::os::raw::{c_int, c_void};
use std::time::{Duration, Instant};

pub struct Mpi {
    /// Finalizes MPI when dropped.
    _universe: ::mpi::environment::Universe,
    world: SimpleCommunicator,
    pub rank: usize,
    pub size: usize,
}

// SAFETY: MPI is initialised with thread level Serialized, and lmforge calls
// it from one thread at a time (the thread running the training step, or
// the main thread between steps), never from two at once.
unsafe impl Send for Mpi {}
unsafe impl Sync for Mpi {}

/// What a collective is for (named in the timeout's error) and how long it may wait.
type Wait<'a> = (&'a str, Duration);

impl Mpi {
    pub fn init(launch: Launch) -> Result<Mpi> {
        // The training step calls MPI from a worker thread of the pool, one call at a time.
        let wanted = ::mpi::Threading::Serialized;
        let (universe, level) = ::mpi::initialize_with_threading(wanted).ok_or_else(|| {
            Error::Distributed("MPI was already initialised in this process".into())
        })?;
        if level < wanted {
            return Err(Error::Distributed(format!(
                "the MPI library offers thread level {level:?}; lmforge needs Serialized"
            )));
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        if size != launch.size {
            return Err(Error::Distributed(format!(
                "the launcher announced {} ranks but MPI sees {size}: was lmforge built against \
                 another MPI library than the mpirun that started it?",
                launch.size
            )));
        }
        Ok(Mpi {
            _universe: universe,
            world,
            rank,
            size,
        })
    }

    pub fn abort(&self, code: i32) -> ! {
        ::mpi::traits::Communicator::abort(&self.world, code)
    }

    /// Test `request` until it completes, or give up after the timeout.
    fn wait(&self, mut request: ffi::MPI_Request, (what, timeout): Wait) -> Result<()> {
        let started = Instant::now();
        loop {
            let mut done: c_int = 0;
            // SAFETY: `request` came from a non-blocking call whose buffers the
            // caller keeps borrowed until this returns; errors abort (MPI's default handler).
            unsafe { ffi::MPI_Test(&mut request, &mut done, ffi::RSMPI_STATUS_IGNORE) };
            if done != 0 {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(Error::Distributed(format!(
                    "rank {} of {}: the other ranks did not answer for {:.0} s in the {what}: a \
                     rank has died or hangs (set LMFORGE_DIST_TIMEOUT_S to wait longer)",
                    self.rank,
                    self.size,
                    timeout.as_secs_f64()
                )));
            }
            std::thread::yield_now();
        }
    }

    fn datatype<T: Element>() -> ffi::MPI_Datatype {
        // SAFETY: constants defined by the MPI library, read after MPI_Init.
        unsafe {
            match T::IS_F64 {
                true => ffi::RSMPI_DOUBLE,
                false => ffi::RSMPI_FLOAT,
            }
        }
    }

    fn all_reduce<T: Element>(&self, send: &[T], recv: &mut [T], wait: Wait) -> Result<()> {
        assert_eq!(send.len(), recv.len(), "all-reduce of unequal buffers");
        let count = count(send.len())?;
        // SAFETY: both buffers hold `count` elements of the datatype and stay
        // borrowed until `wait` returns; they do not overlap (one is `&mut`).
        let request = unsafe {
            let mut request = ffi::RSMPI_REQUEST_NULL;
            let (s, r) = (
                send.as_ptr() as *const c_void,
                recv.as_mut_ptr() as *mut c_void,
            );
            let comm = self.world.as_raw();
            ffi::MPI_Iallreduce(
                s,
                r,
                count,
                Self::datatype::<T>(),
                ffi::RSMPI_SUM,
                comm,
                &mut request,
            );
            request
        };
        self.wait(request, wait)
    }

    pub fn all_reduce_f32(&self, send: &[f32], recv: &mut [f32], wait: Wait) -> Result<()> {
        self.all_reduce(send, recv, wait)
    }

    pub fn all_reduce_f64(&self, send: &[f64], recv: &mut [f64], wait: Wait) -> Result<()> {
        self.all_reduce(send, recv, wait)
    }

    pub fn reduce_scatter_f32(
        &self,
        send: &[f32],
        recv: &mut [f32],
        counts: &[i32],
        wait: Wait,
    ) -> Result<()> {
        let total: i64 = counts.iter().map(|&c| c as i64).sum();
        assert!(send.len() as i64 == total && recv.len() == counts[self.rank] as usize);
        // SAFETY: `send` holds the sum of `counts`, `recv` this rank's count,
        // `counts` one entry per rank; all stay borrowed until `wait` returns.
        let request = unsafe {
            let mut request = ffi::RSMPI_REQUEST_NULL;
            let (s, r) = (
                send.as_ptr() as *const c_void,
                recv.as_mut_ptr() as *mut c_void,
            );
            let comm = self.world.as_raw();
            let float = ffi::RSMPI_FLOAT;
            ffi::MPI_Ireduce_scatter(
                s,
                r,
                counts.as_ptr(),
                float,
                ffi::RSMPI_SUM,
                comm,
                &mut request,
            );
            request
        };
        self.wait(request, wait)
    }

    pub fn all_gather<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
        (counts, displs): (&[i32], &[i32]),
        wait: Wait,
    ) -> Result<()> {
        check_layout(send.len(), recv.len(), (counts, displs), self.rank);
        // SAFETY: `check_layout` bounds every rank's part inside `recv`; the
        // buffers stay borrowed until `wait` returns and do not overlap.
        let request = unsafe {
            let mut request = ffi::RSMPI_REQUEST_NULL;
            let (s, r) = (
                send.as_ptr() as *const c_void,
                recv.as_mut_ptr() as *mut c_void,
            );
            let (t, comm) = (Self::datatype::<T>(), self.world.as_raw());
            let (c, d) = (counts.as_ptr(), displs.as_ptr());
            ffi::MPI_Iallgatherv(s, send.len() as c_int, t, r, c, d, t, comm, &mut request);
            request
        };
        self.wait(request, wait)
    }

    pub fn gather_to_root(
        &self,
        send: &[f32],
        recv: Option<&mut [f32]>,
        shards: &Shards,
        wait: Wait,
    ) -> Result<()> {
        let (counts, displs) = (&shards.counts, &shards.displs);
        let recv_ptr = match recv {
            Some(recv) => {
                check_layout(send.len(), recv.len(), (counts, displs), self.rank);
                recv.as_mut_ptr() as *mut c_void
            }
            None => std::ptr::null_mut(), // only rank 0 receives
        };
        assert!(
            self.rank != 0 || !recv_ptr.is_null(),
            "rank 0 gathers into a buffer"
        );
        // SAFETY: as for `all_gather`; the receive buffer is read only at rank 0.
        let request = unsafe {
            let mut request = ffi::RSMPI_REQUEST_NULL;
            let (t, comm) = (ffi::RSMPI_FLOAT, self.world.as_raw());
            let s = send.as_ptr() as *const c_void;
            let (c, d) = (counts.as_ptr(), displs.as_ptr());
            ffi::MPI_Igatherv(
                s,
                send.len() as c_int,
                t,
                recv_ptr,
                c,
                d,
                t,
                0,
                comm,
                &mut request,
            );
            request
        };
        self.wait(request, wait)
    }
}

fn count(n: usize) -> Result<c_int> {
    c_int::try_from(n)
        .map_err(|_| Error::Distributed(format!("{n} values are more than one MPI message counts")))
}

/// Every rank's part (`counts`, `displs`) lies inside a receive buffer of
/// `recv` elements, and this rank sends exactly its part.
fn check_layout(send: usize, recv: usize, (counts, displs): (&[i32], &[i32]), rank: usize) {
    assert_eq!(counts.len(), displs.len());
    assert_eq!(
        send, counts[rank] as usize,
        "rank {rank} sends its whole part"
    );
    for (&c, &d) in counts.iter().zip(displs) {
        assert!(
            c >= 0 && d >= 0 && (c as usize + d as usize) <= recv,
            "a part outside the buffer"
        );
    }
}
