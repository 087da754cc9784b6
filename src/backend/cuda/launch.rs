//! Launching the kernels: their arguments, their grid shapes, and the copies
//! between host and device memory.
//!
//! Arguments are kept by value in the [`Launcher`] until the launch, which
//! hands the driver a pointer to each; device buffers travel as their
//! 64-bit addresses (a kernel's `float*` parameter is 8 bytes).

use crate::backend::AttentionDims;
use cudarc::driver::{CudaFunction, CudaStream, DriverError, LaunchConfig, PushKernelArg};

/// Threads per block of the one-element-per-thread kernels.
const BLOCK: u32 = 256;
/// Warps per block of the attention kernels (one row each).
const ATTENTION_WARPS: u32 = 4;
/// The largest head size the attention kernels hold in registers
/// (`32 * LMF_ATT_LANE_DIMS` in `kernels/attention.cu`).
pub const MAX_HEAD_SIZE: usize = 256;

/// One kernel argument, by value.
pub enum Arg {
    U64(u64),
    U32(u32),
    I32(i32),
    F32(f32),
}

impl From<u64> for Arg {
    fn from(v: u64) -> Arg {
        Arg::U64(v)
    }
}
impl From<u32> for Arg {
    fn from(v: u32) -> Arg {
        Arg::U32(v)
    }
}
impl From<i32> for Arg {
    fn from(v: i32) -> Arg {
        Arg::I32(v)
    }
}
impl From<f32> for Arg {
    fn from(v: f32) -> Arg {
        Arg::F32(v)
    }
}

/// A kernel launch being put together: `.arg(..)` in the kernel's
/// parameter order, then one of the `run_*` shapes.
pub struct Launcher<'a> {
    stream: &'a CudaStream,
    func: &'a CudaFunction,
    name: &'static str,
    args: Vec<Arg>,
}

impl<'a> Launcher<'a> {
    pub fn new(stream: &'a CudaStream, func: &'a CudaFunction, name: &'static str) -> Self {
        Launcher {
            stream,
            func,
            name,
            args: Vec::with_capacity(16),
        }
    }

    pub fn arg(mut self, value: impl Into<Arg>) -> Self {
        self.args.push(value.into());
        self
    }

    /// Over `n` elements with a grid-stride loop (the grid capped).
    pub fn run_elementwise(self, n: u64) {
        let blocks = n.div_ceil(BLOCK as u64).clamp(1, 65_535) as u32;
        self.run_shape(n, (blocks, 1, 1), (BLOCK, 1, 1));
    }

    /// One thread per item, `n` items.
    pub fn run_threads(self, n: u64) {
        let blocks = n.div_ceil(BLOCK as u64) as u32;
        self.run_shape(n, (blocks, 1, 1), (BLOCK, 1, 1));
    }

    /// One warp per row, `rows` rows.
    pub fn run_warps(self, rows: u64) {
        let per_block = (BLOCK / 32) as u64;
        self.run_shape(rows, (rows.div_ceil(per_block) as u32, 1, 1), (BLOCK, 1, 1));
    }

    /// Column sums: blocks of 32 columns by 8 row strides.
    pub fn run_columns(self, cols: u64) {
        self.run_shape(cols, (cols.div_ceil(32) as u32, 1, 1), (32, 8, 1));
    }

    /// `grid` blocks of `block` threads.
    pub fn run_blocks(self, grid: u32, block: u32) {
        self.run_shape(grid as u64, (grid, 1, 1), (block, 1, 1));
    }

    /// Attention: one warp per query (or key) row, per head, per sequence
    /// (`heads`: the query heads, or the key/value heads for dK and dV).
    pub fn run_rows(self, d: AttentionDims, heads: usize) {
        let grid = (
            (d.t as u64).div_ceil(ATTENTION_WARPS as u64) as u32,
            heads as u32,
            d.b as u32,
        );
        let work = (d.t * heads * d.b) as u64;
        self.run_shape(work, grid, (32 * ATTENTION_WARPS, 1, 1));
    }

    /// Launch, unless there is no work (a grid of 0 blocks is an error).
    fn run_shape(self, work: u64, grid_dim: (u32, u32, u32), block_dim: (u32, u32, u32)) {
        if work == 0 {
            return;
        }
        let cfg = LaunchConfig {
            grid_dim,
            block_dim,
            shared_mem_bytes: 0,
        };
        let mut builder = self.stream.launch_builder(self.func);
        for arg in &self.args {
            match arg {
                Arg::U64(v) => builder.arg(v),
                Arg::U32(v) => builder.arg(v),
                Arg::I32(v) => builder.arg(v),
                Arg::F32(v) => builder.arg(v),
            };
        }
        // SAFETY: the arguments match the kernel's parameters in order and
        // type (each call site mirrors its `extern "C"` signature), the
        // addresses are of live device buffers at least as long as the kernel
        // reads, and they stay alive until the stream is synchronised.
        unsafe { builder.launch(cfg) }
            .unwrap_or_else(|e| panic!("CUDA: kernel {} did not launch: {e}", self.name));
    }
}

/// Attention keeps a head in registers: refuse a larger one clearly; and
/// each key/value head serves a whole group of query heads.
pub fn check_heads(d: AttentionDims) {
    assert!(
        d.head_size() <= MAX_HEAD_SIZE,
        "the CUDA attention kernels take heads of at most {MAX_HEAD_SIZE} channels, \
         and this model's have {} (n_embd / n_head)",
        d.head_size()
    );
    assert!(
        d.n_kv_head > 0 && d.n_head.is_multiple_of(d.n_kv_head),
        "{} query heads cannot share {} key/value heads evenly",
        d.n_head,
        d.n_kv_head
    );
}

/// Make the stream's context this thread's current one (the raw driver and
/// cuBLASLt calls below act on the current context).
pub fn bind(stream: &CudaStream) {
    stream
        .context()
        .bind_to_thread()
        .unwrap_or_else(|e| panic!("CUDA: could not use the GPU from this thread: {e}"));
}

/// Copy `host` to device address `dst` and wait for it (so `host` may go).
pub fn upload<T>(stream: &CudaStream, dst: u64, host: &[T]) -> Result<(), DriverError> {
    if host.is_empty() {
        return Ok(());
    }
    bind(stream);
    // SAFETY: `dst` holds at least `host.len()` values (the callers check);
    // `host` stays borrowed until the synchronise.
    unsafe { cudarc::driver::result::memcpy_htod_async(dst, host, stream.cu_stream()) }
        .and_then(|()| stream.synchronize())
}

/// Copy `host.len()` values from device address `src` and wait for them.
pub fn download<T>(stream: &CudaStream, src: u64, host: &mut [T]) {
    if host.is_empty() {
        return;
    }
    bind(stream);
    // SAFETY: `src` holds at least `host.len()` values (the callers check the
    // lengths); the host memory stays borrowed until the synchronise below.
    unsafe { cudarc::driver::result::memcpy_dtoh_async(host, src, stream.cu_stream()) }
        .and_then(|()| stream.synchronize())
        .unwrap_or_else(|e| panic!("CUDA: could not copy from the GPU: {e}"));
}

/// Copy `bytes` bytes from device address `src` to `dst` (in stream order).
pub fn copy(stream: &CudaStream, dst: u64, src: u64, bytes: usize) {
    if bytes == 0 {
        return;
    }
    bind(stream);
    // SAFETY: both ranges are inside live buffers (the views' lengths match).
    unsafe { cudarc::driver::result::memcpy_dtod_async(dst, src, bytes, stream.cu_stream()) }
        .unwrap_or_else(|e| panic!("CUDA: could not copy on the GPU: {e}"));
}
