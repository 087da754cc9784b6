//! A training step allocates no memory of its own: parameters, gradients,
//! optimizer state and activations are sized once, before the first step.
//!
//! A counting global allocator (this file is its own test binary, with one
//! test, so nothing else allocates concurrently) records every allocation
//! made during a few training steps after a warm-up step; each step is
//! the trainer's: batch, forward, backward with dropout, AdamW, on the
//! thread pool. Two kinds of allocation are not lmforge's and are counted
//! apart:
//! - the `gemm` crate allocates scratch inside each matrix product (it takes
//!   no workspace argument): cache-line-aligned (64 or 128 bytes) packing
//!   buffers and a vector of `bool` flags (1-byte aligned). lmforge's own
//!   buffers hold `f32`, `u32` or `usize` (4- or 8-byte aligned), so
//!   alignment tells the two apart;
//! - the thread pool boxes a job record (under 1 KiB) for each polling task
//!   `on_pool` starts, one per other worker and step.
//!
//! Anything else fails the test: any other allocation of 1 KiB or more (a
//! buffer), or more small ones than the thread pool's job records.

use lmforge::backend::cpu::{init_threads, on_pool};
use lmforge::data::sampler::BatchSampler;
use lmforge::model::{Mode, Model};
use lmforge::optim::AdamW;
use lmforge::train::TrainConfig;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static GEMM_SCRATCH: AtomicUsize = AtomicUsize::new(0);
static SMALL: AtomicUsize = AtomicUsize::new(0);
static LARGE: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
const BUFFER_BYTES: usize = 1024;
const CACHE_LINE: usize = 64;

impl Counting {
    fn record(layout: Layout) {
        if !COUNTING.load(Ordering::Relaxed) {
            return;
        }
        if layout.align() >= CACHE_LINE || layout.align() == 1 {
            GEMM_SCRATCH.fetch_add(1, Ordering::Relaxed);
        } else if layout.size() >= BUFFER_BYTES {
            LARGE.fetch_add(1, Ordering::Relaxed);
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        } else {
            SMALL.fetch_add(1, Ordering::Relaxed);
        }
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::record(layout);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::record(layout);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` is valid for `layout.align()`.
        Self::record(unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) });
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn training_steps_allocate_no_buffers() {
    let threads = init_threads(Some(2)).unwrap();
    let mut config = TrainConfig::preset("char-cpu").unwrap();
    config.dropout = 0.1; // the dropout masks are part of the step too
    config.batch_size = 4;
    config.grad_accum = 2;
    let vocab = 65;
    let model = Model::new(config.model_config(vocab)).unwrap();
    let (b, t) = (config.batch_size, config.block_size);
    let tokens: Vec<u32> = (0..20_000u32)
        .map(|i| (i * 7 + i / 13) % vocab as u32)
        .collect();
    let sampler = BatchSampler::new(&tokens, b, t, 1, "synthetic").unwrap();
    let mut params = model.init_params(1);
    let mut grads = vec![0.0f32; params.len()];
    let mut opt = AdamW::new(config.adamw(), &model.layout.tensors);
    let mut acts = model.activations(b, t);
    let (mut inputs, mut targets) = (vec![0u32; b * t], vec![0u32; b * t]);
    let schedule = config.schedule();

    let mut step = |step: u64| {
        on_pool(|| {
            grads.fill(0.0);
            let mut loss = 0.0;
            for micro in 0..config.grad_accum as u64 {
                sampler.fill(1 + micro * 16, step, &mut inputs, &mut targets);
                let mode = Mode::Train {
                    seed: 5,
                    step_key: step * 2 + micro,
                };
                model.forward(&params, &mut acts, &inputs, b, t, mode);
                let dloss = 1.0 / (b * t * config.grad_accum) as f32;
                loss += model.backward(
                    &params, &mut grads, &mut acts, &inputs, &targets, b, t, mode, dloss,
                );
            }
            opt.update(&mut params, &grads, schedule.at(step), config.grad_clip);
            loss
        })
    };

    let first_loss = step(0); // warm-up: thread-local scratch of the matrix products
    let steps = 4;
    COUNTING.store(true, Ordering::SeqCst);
    let mut last_loss = first_loss;
    for s in 1..=steps {
        last_loss = step(s);
    }
    COUNTING.store(false, Ordering::SeqCst);

    assert!(
        first_loss.is_finite() && last_loss.is_finite() && last_loss < first_loss,
        "the steps must train: loss {first_loss} -> {last_loss}"
    );
    let (small, large) = (SMALL.load(Ordering::SeqCst), LARGE.load(Ordering::SeqCst));
    assert_eq!(
        large,
        0,
        "{large} buffers (1 KiB or more, not gemm's scratch) allocated during {steps} steps (largest {} bytes)",
        LARGEST.load(Ordering::SeqCst)
    );
    let allowed = steps as usize * (threads - 1);
    assert!(
        small <= allowed,
        "{small} small allocations during {steps} steps, more than the thread pool's {allowed} job records"
    );
    // The classification above is only meaningful if gemm's scratch really
    // is what those allocations are: there is some in every step.
    let scratch = GEMM_SCRATCH.load(Ordering::SeqCst);
    assert!(
        scratch >= steps as usize,
        "expected gemm's scratch in each step, saw {scratch} such allocations"
    );
}
