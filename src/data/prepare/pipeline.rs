//! The prepare pipeline: one reader thread → `threads` workers → the calling
//! thread, in input order.
//!
//! The reader streams documents out of the inputs and packs their pieces into
//! batches of about [`BATCH_BYTES`]; compressed tar members (OpenWebText's
//! `.xz` files) it hands on whole, for workers to decompress in parallel.
//! Workers turn batches into results (token bytes, or character counts for the
//! vocabulary pass); the caller's `sink`
//! receives results in the order the reader made them, with a marker after each
//! input's last batch. At most `2 * threads + 2` batches are in flight (the
//! reader takes a credit per batch and the sink gives it back), so memory is
//! bounded whatever the corpus size, and a slow worker cannot make the reorder
//! buffer grow.

use crate::data::documents::{
    Blob, InputFile, InputStats, Piece, ReadOptions, Unit, expand_blob, read_input,
};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

/// Text per batch handed to a worker.
pub const BATCH_BYTES: usize = 1 << 20;

/// What the sink receives, in input order.
pub enum Item<R> {
    /// A worker's results: for one batch, or for every batch of an expanded
    /// compressed member, whose reading `stats` go with them.
    Batches { results: Vec<R>, stats: InputStats },
    /// Every batch of input number `index` (into the slice given to [`run`]) was delivered.
    InputDone { index: usize, stats: InputStats },
}

enum Job {
    Batch(Vec<Piece>),
    Blob(Blob),
    InputDone { index: usize, stats: InputStats },
    Failed(Error),
}

/// Read `inputs`, run `work` on every batch in parallel, and hand the results to
/// `sink` in order. The first error (reading, working or sinking) stops everything.
pub fn run<R: Send>(
    inputs: &[InputFile],
    opts: &ReadOptions,
    threads: usize,
    bytes_read: &AtomicU64,
    work: &(dyn Fn(Vec<Piece>) -> Result<R> + Sync),
    sink: &mut dyn FnMut(Item<R>) -> Result<()>,
) -> Result<()> {
    let threads = threads.max(1);
    let in_flight = 2 * threads + 2;
    let (job_tx, job_rx) = sync_channel::<(u64, Job)>(in_flight);
    let (done_tx, done_rx) = sync_channel::<(u64, Result<Item<R>>)>(in_flight);
    let (credit_tx, credit_rx) = sync_channel::<()>(in_flight);
    for _ in 0..in_flight {
        credit_tx.send(()).expect("the credit channel has room");
    }
    let job_rx = Arc::new(Mutex::new(job_rx));
    std::thread::scope(|scope| {
        scope.spawn(move || reader(inputs, opts, bytes_read, job_tx, credit_rx));
        for _ in 0..threads {
            let (job_rx, done_tx) = (Arc::clone(&job_rx), done_tx.clone());
            scope.spawn(move || worker(&job_rx, done_tx, opts, work));
        }
        drop(done_tx);
        // Returning drops the receivers: the reader and workers see closed
        // channels and stop, and the scope joins them.
        in_order(done_rx, credit_tx, sink)
    })
}

/// Error used to stop the reader when nobody listens any more.
fn closed() -> Error {
    Error::Data("prepare pipeline closed".into())
}

fn reader(
    inputs: &[InputFile],
    opts: &ReadOptions,
    bytes_read: &AtomicU64,
    jobs: SyncSender<(u64, Job)>,
    credits: Receiver<()>,
) {
    let mut seq = 0u64;
    let mut send = |job: Job| -> Result<()> {
        credits.recv().map_err(|_| closed())?;
        jobs.send((seq, job)).map_err(|_| closed())?;
        seq += 1;
        Ok(())
    };
    for (index, input) in inputs.iter().enumerate() {
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        let result = read_input(input, opts, bytes_read, &mut |unit| match unit {
            Unit::Piece(piece) => {
                batch_bytes += piece.text.len();
                batch.push(piece);
                if batch_bytes >= BATCH_BYTES {
                    batch_bytes = 0;
                    send(Job::Batch(std::mem::take(&mut batch)))?;
                }
                Ok(())
            }
            Unit::Blob(blob) => {
                if !batch.is_empty() {
                    batch_bytes = 0;
                    send(Job::Batch(std::mem::take(&mut batch)))?;
                }
                send(Job::Blob(blob))
            }
        });
        let sent = match result {
            Ok(stats) => {
                let rest = if batch.is_empty() {
                    Ok(())
                } else {
                    send(Job::Batch(batch))
                };
                rest.and_then(|()| send(Job::InputDone { index, stats }))
            }
            Err(e) => {
                let _ = send(Job::Failed(e));
                return;
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

fn worker<R>(
    jobs: &Mutex<Receiver<(u64, Job)>>,
    done: SyncSender<(u64, Result<Item<R>>)>,
    opts: &ReadOptions,
    work: &(dyn Fn(Vec<Piece>) -> Result<R> + Sync),
) {
    loop {
        // The lock is held only while waiting for the next job.
        let Ok((seq, job)) = jobs.lock().expect("no worker panics holding it").recv() else {
            return;
        };
        let result = match job {
            Job::Batch(pieces) => work(pieces).map(|r| Item::Batches {
                results: vec![r],
                stats: InputStats::default(),
            }),
            Job::Blob(blob) => expand(blob, opts, work),
            Job::InputDone { index, stats } => Ok(Item::InputDone { index, stats }),
            Job::Failed(e) => Err(e),
        };
        if done.send((seq, result)).is_err() {
            return;
        }
    }
}

/// Decompress and read a blob, running `work` on batches of its pieces.
fn expand<R>(
    blob: Blob,
    opts: &ReadOptions,
    work: &(dyn Fn(Vec<Piece>) -> Result<R> + Sync),
) -> Result<Item<R>> {
    let (mut results, mut batch, mut batch_bytes) = (Vec::new(), Vec::new(), 0);
    let stats = expand_blob(blob, opts, &mut |piece| {
        batch_bytes += piece.text.len();
        batch.push(piece);
        if batch_bytes >= BATCH_BYTES {
            batch_bytes = 0;
            results.push(work(std::mem::take(&mut batch))?);
        }
        Ok(())
    })?;
    if !batch.is_empty() {
        results.push(work(batch)?);
    }
    Ok(Item::Batches { results, stats })
}

/// Deliver results to `sink` by sequence number, returning a credit for each.
fn in_order<R>(
    done: Receiver<(u64, Result<Item<R>>)>,
    credits: SyncSender<()>,
    sink: &mut dyn FnMut(Item<R>) -> Result<()>,
) -> Result<()> {
    let mut waiting = BTreeMap::new();
    let mut next = 0u64;
    for (seq, result) in done {
        waiting.insert(seq, result);
        while let Some(result) = waiting.remove(&next) {
            next += 1;
            sink(result?)?;
            let _ = credits.send(());
        }
    }
    if waiting.is_empty() {
        Ok(())
    } else {
        Err(Error::Data(
            "prepare pipeline: a worker stopped early".into(),
        ))
    }
}
