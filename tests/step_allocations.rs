//! A training step allocates no memory of lmforge's own: parameters,
//! gradients, optimizer state and activations are sized once, before the
//! first step.
//!
//! A counting global allocator (this file is its own test binary, with one
//! test, so nothing else allocates concurrently) records every allocation
//! made during a few of the trainer's real steps ([`Trainer::step`]: batch,
//! forward, backward with dropout and gradient accumulation, AdamW, on the
//! thread pool), after a warm-up step that sizes the kernels' scratch. Each
//! allocation is attributed by walking the stack from the allocator
//! outwards: the first frame that belongs to
//! - `gemm` (or its `dyn_stack`): the packing buffers `gemm` allocates inside
//!   every matrix product (it takes no workspace argument);
//! - `rayon_core`: the thread pool's job records (`on_pool` spawns a polling
//!   task per other worker);
//! - `lmforge`: ours, whatever its size, and the test fails, naming the frame.
//!
//! The attribution is itself checked: gemm's scratch must show up in every f32
//! step, and a known allocation of lmforge's made while counting must be
//! attributed to lmforge.

use lmforge::backend::cpu::{Cpu, Dtype, init_threads};
use lmforge::train::{Preset, Trainer};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static GEMM: AtomicUsize = AtomicUsize::new(0);
static POOL: AtomicUsize = AtomicUsize::new(0);
static LMFORGE: AtomicUsize = AtomicUsize::new(0);
static UNATTRIBUTED: AtomicUsize = AtomicUsize::new(0);
static FIRST_LMFORGE: Mutex<Option<String>> = Mutex::new(None);

thread_local! {
    /// Set while this thread attributes an allocation: the stack walk
    /// allocates too, and those allocations are not counted.
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// Who asked for an allocation.
enum Owner {
    Gemm,
    Pool,
    Lmforge(String),
    Unattributed,
}

/// The owner of a frame, by its source file (inlined frames have short
/// names but full paths), else by its symbol name.
fn owner_of(symbol: &backtrace::Symbol) -> Option<Owner> {
    let ours = concat!(env!("CARGO_MANIFEST_DIR"), "/src/");
    let path = symbol.filename().map(|p| p.to_string_lossy().into_owned());
    let name = symbol.name().map(|n| n.to_string()).unwrap_or_default();
    let here = path.as_deref().unwrap_or(&name);
    let is = |crate_dir: &str, crate_path: &str| {
        here.contains(crate_dir) || (path.is_none() && name.contains(crate_path))
    };
    if is("/gemm-", "gemm_") || is("/dyn-stack-", "dyn_stack::") {
        Some(Owner::Gemm)
    } else if is("/rayon-core-", "rayon_core::") {
        Some(Owner::Pool)
    } else if here.starts_with(ours) || (path.is_none() && name.contains("lmforge::")) {
        Some(Owner::Lmforge(format!("{name} ({here})")))
    } else {
        None
    }
}

/// The innermost frame (inlined ones included) that names an owner.
fn current_owner() -> Owner {
    let mut owner = Owner::Unattributed;
    backtrace::trace(|frame| {
        let mut found = None;
        backtrace::resolve_frame(frame, |symbol| {
            if found.is_none() {
                found = owner_of(symbol);
            }
        });
        match found {
            Some(o) => {
                owner = o;
                false
            }
            None => true,
        }
    });
    owner
}

impl Counting {
    fn record() {
        if !COUNTING.load(Ordering::Relaxed) || IN_HOOK.with(|h| h.replace(true)) {
            return;
        }
        match current_owner() {
            Owner::Gemm => GEMM.fetch_add(1, Ordering::Relaxed),
            Owner::Pool => POOL.fetch_add(1, Ordering::Relaxed),
            Owner::Unattributed => UNATTRIBUTED.fetch_add(1, Ordering::Relaxed),
            Owner::Lmforge(frame) => {
                let mut first = FIRST_LMFORGE.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert(frame);
                LMFORGE.fetch_add(1, Ordering::Relaxed)
            }
        };
        IN_HOOK.with(|h| h.set(false));
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::record();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::record();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::record();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn counted<R>(work: impl FnOnce() -> R) -> R {
    COUNTING.store(true, Ordering::SeqCst);
    let result = work();
    COUNTING.store(false, Ordering::SeqCst);
    result
}

/// Both wirings, the GPT (char-cpu) and the Llama family (llama-char), with
/// f32 products and with bf16 ones (their operands rounded into scratch).
#[test]
fn training_steps_allocate_nothing_of_lmforges_own() {
    init_threads(Some(2)).unwrap();
    for preset in [Preset::CharCpu, Preset::LlamaChar] {
        for dtype in [Dtype::F32, Dtype::Bf16] {
            steps_allocate_nothing(preset, dtype);
        }
    }
}

fn steps_allocate_nothing(preset: Preset, dtype: Dtype) {
    for counter in [&LMFORGE, &UNATTRIBUTED, &GEMM] {
        counter.store(0, Ordering::SeqCst);
    }
    let be = Cpu::with_dtype(dtype);
    let mut config = preset.config();
    config.model.vocab_size = 65;
    config.model.dropout = 0.1; // the dropout masks are part of the step too
    config.batch_size = 4;
    config.grad_accum = 2;
    let tokens: Vec<u32> = (0..20_000u32).map(|i| (i * 7 + i / 13) % 65).collect();
    let mut trainer = Trainer::new(&be, &config, (&tokens, &tokens), None, None).unwrap();

    let first_loss = trainer.step(0).unwrap(); // warm-up: the kernels' scratch
    let steps = 4;
    let last_loss = counted(|| {
        (1..=steps)
            .map(|s| trainer.step(s).unwrap())
            .last()
            .unwrap()
    });
    assert!(
        first_loss.is_finite() && last_loss.is_finite() && last_loss < first_loss,
        "the steps must train: loss {first_loss} -> {last_loss}"
    );
    let ours = LMFORGE.swap(0, Ordering::SeqCst);
    let first = FIRST_LMFORGE.lock().unwrap().take();
    assert_eq!(
        ours, 0,
        "{preset} {dtype:?}: {ours} allocations of lmforge's during {steps} steps, the first in {first:?}"
    );
    let unattributed = UNATTRIBUTED.load(Ordering::SeqCst);
    assert_eq!(
        unattributed, 0,
        "{unattributed} allocations with no owner on the stack"
    );
    // bf16 steps multiply without gemm: its scratch is expected in the f32 steps only.
    let scratch = GEMM.load(Ordering::SeqCst);
    assert!(
        dtype == Dtype::Bf16 || scratch >= steps as usize,
        "expected gemm's scratch in each step, saw {scratch} such allocations"
    );

    // The attribution sees lmforge's own allocations, however small.
    counted(|| lmforge::model::ParamLayout::new(&config.model));
    assert!(
        LMFORGE.load(Ordering::SeqCst) > 0,
        "a parameter layout built while counting was not attributed to lmforge"
    );
}
