//! The CUDA backend: every kernel of the [`Backend`] seam on an NVIDIA GPU,
//! through `cudarc` with its libraries loaded at run time.
//!
//! The binary is the same with or without CUDA: nothing is linked against
//! the toolkit or the driver. Starting the backend ([`Cuda::new`]):
//! 1. [`probe`] finds and opens the driver, NVRTC and cuBLASLt, so a missing
//!    one is an error naming it, never `cudarc`'s panic;
//! 2. the driver must be CUDA 13.0 or newer (driver 580), the version the
//!    bindings were generated for;
//! 3. [`compile`] builds the kernels (`kernels/*.cu`) for the GPU's
//!    architecture, or takes them from the on-disk cache.
//!
//! Buffers are float32 in device memory; views are device addresses with a
//! length, so a view is `Copy` like the CPU's `&[f32]`. All work goes to one
//! stream, in order; the host waits only where a value comes back (a loss, a
//! gradient norm, a download). Every reduction runs in a fixed order with no
//! atomics, so a step gives the same bits on every run.
//!
//! Every layer of the seam has a device kernel: nothing runs on the host
//! behind the model's back. Per training step only the batch's token ids go
//! up, and the loss and the gradient norm's partial sums come down; every
//! copy between host and device is counted ([`Cuda::transfers`]) so a test
//! can hold the backend to that.
//!
//! Matrix products use TF32 tensor cores by default
//! ([`MatmulPrecision::Tf32`], as PyTorch's `allow_tf32` and llm.c's fp32
//! path); [`MatmulPrecision::Fp32`] gives full float32 products, equal to the
//! CPU's up to the order of the sums.
//!
//! The seam's kernels return nothing, so a failure inside one (the GPU lost,
//! a launch refused) panics with the driver's message: it is a fault of the
//! machine or of this backend, not of the user's input. Out-of-memory, the
//! failure users cause, is caught earlier, when buffers are allocated
//! ([`Backend::zeros`] and [`Backend::upload`] return errors).

mod blas;
pub mod compile;
mod launch;
pub mod probe;

use crate::backend::{
    Accumulate, Activation, AdamWStep, AttentionDims, Backend, Dropout, Epilogue, Mat, NORM_CHUNK,
    ParamGroup, RopeDims, WeightType,
};
use crate::error::{Error, Result};
use blas::{Blas, Operand};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr,
    DriverError, ValidAsZeroBits,
};
use launch::Launcher;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How cuBLASLt multiplies float32 matrices (`--matmul-precision`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MatmulPrecision {
    /// TF32 tensor cores: inputs rounded to a 10-bit mantissa, sums in
    /// float32 (`CUBLAS_COMPUTE_32F_FAST_TF32`); several times faster.
    #[default]
    Tf32,
    /// Full float32 (`CUBLAS_COMPUTE_32F`), as the CPU computes.
    Fp32,
}

/// Copies between host and device memory since the backend started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfers {
    pub count: u64,
    pub bytes: u64,
}

/// What the backend found when it started, for the user to see.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub name: String,
    /// Compute capability, e.g. `(9, 0)`.
    pub arch: (i32, i32),
    pub memory_bytes: usize,
    pub driver_version: i32,
    pub nvrtc_version: (i32, i32),
    pub libraries: Vec<probe::Found>,
    /// Whether the kernels came from the on-disk cache.
    pub kernels_cached: bool,
    pub precision: MatmulPrecision,
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "cuda: {} (sm_{}{}, {:.1} GiB), driver CUDA {}.{}, NVRTC {}.{}, kernels {}, \
             products {:?}",
            self.name,
            self.arch.0,
            self.arch.1,
            self.memory_bytes as f64 / (1u64 << 30) as f64,
            self.driver_version / 1000,
            self.driver_version % 1000 / 10,
            self.nvrtc_version.0,
            self.nvrtc_version.1,
            if self.kernels_cached {
                "cached"
            } else {
                "compiled"
            },
            self.precision,
        )?;
        for lib in &self.libraries {
            writeln!(f, "cuda: {} from {lib}", lib.library.files[0])?;
        }
        Ok(())
    }
}

/// An owned float32 array on the GPU (`len` may be 0; the allocation
/// behind it never is).
pub struct CudaBuf {
    _slice: CudaSlice<f32>,
    addr: u64,
    len: usize,
}

/// An owned array of token ids on the GPU.
pub struct CudaIds {
    _slice: CudaSlice<u32>,
    addr: u64,
    len: usize,
}

/// Part of a [`CudaBuf`], read-only: its device address and length.
#[derive(Clone, Copy, Debug)]
pub struct DevView<'a> {
    addr: u64,
    len: usize,
    _buf: PhantomData<&'a CudaBuf>,
}

/// Part of a [`CudaBuf`], writable.
#[derive(Debug)]
pub struct DevViewMut<'a> {
    addr: u64,
    len: usize,
    _buf: PhantomData<&'a mut CudaBuf>,
}

/// Part of a [`CudaIds`].
#[derive(Clone, Copy, Debug)]
pub struct IdsView<'a> {
    addr: u64,
    len: usize,
    _ids: PhantomData<&'a CudaIds>,
}

const F32: usize = std::mem::size_of::<f32>();

impl DevViewMut<'_> {
    fn read(&self) -> DevView<'_> {
        DevView {
            addr: self.addr,
            len: self.len,
            _buf: PhantomData,
        }
    }
}

/// The CUDA backend on GPU 0.
pub struct Cuda {
    stream: Arc<CudaStream>,
    kernels: HashMap<&'static str, CudaFunction>,
    blas: Blas,
    /// cuBLASLt's workspace and the loss's sum and count: allocated once.
    _workspace: CudaSlice<u8>,
    loss_out: CudaSlice<f64>,
    /// Attention backward's per-query `D` values, grown on first use.
    attention_scratch: Scratch<f32>,
    /// The gradient norm's per-chunk partial sums, grown on first use.
    norm_partials: Scratch<f64>,
    /// Copies between host and device so far (count, bytes).
    transfer_count: AtomicU64,
    transfer_bytes: AtomicU64,
    info: DeviceInfo,
    _module: Arc<CudaModule>,
}

/// cuBLASLt's workspace (what NVIDIA recommends for Hopper).
const WORKSPACE_BYTES: usize = 32 << 20;

impl Cuda {
    /// Start the backend on the first GPU with TF32 products (see the module
    /// docs for the steps).
    pub fn new() -> Result<Cuda> {
        Cuda::with_precision(MatmulPrecision::default())
    }

    /// Start the backend on the first GPU, its products in `precision`.
    pub fn with_precision(precision: MatmulPrecision) -> Result<Cuda> {
        let libraries = probe::open_libraries()?.to_vec();
        let driver_version = driver_version()?;
        if driver_version < 13000 {
            return Err(Error::Cuda(format!(
                "the NVIDIA driver supports CUDA {}.{}, and lmforge needs CUDA 13.0 or newer \
                 (driver 580 or newer)",
                driver_version / 1000,
                driver_version % 1000 / 10
            )));
        }
        let count = CudaContext::device_count().map_err(|e| driver_error("count the GPUs", e))?;
        if count < 1 {
            return Err(Error::Cuda("the NVIDIA driver sees no GPU".into()));
        }
        let ctx = CudaContext::new(0).map_err(|e| driver_error("open GPU 0", e))?;
        let arch = ctx
            .compute_capability()
            .map_err(|e| driver_error("read the GPU's architecture", e))?;
        let (cubin, kernels_cached) = compile::cubin_for((arch.0 * 10 + arch.1) as u32)?;
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
            .map_err(|e| driver_error("load the compiled kernels", e))?;
        let mut kernels = HashMap::new();
        for name in compile::KERNELS {
            let f = module
                .load_function(name)
                .map_err(|e| driver_error(&format!("find kernel {name}"), e))?;
            kernels.insert(name, f);
        }
        let stream = ctx.default_stream();
        let alloc_err = |e| driver_error("allocate the backend's own buffers", e);
        let workspace = stream
            .alloc_zeros::<u8>(WORKSPACE_BYTES)
            .map_err(alloc_err)?;
        let blas = Blas::new(workspace.device_ptr(&stream).0, WORKSPACE_BYTES, precision)?;
        let info = DeviceInfo {
            name: ctx.name().unwrap_or_else(|_| "GPU 0".into()),
            arch,
            memory_bytes: ctx.total_mem().unwrap_or(0),
            driver_version,
            nvrtc_version: compile::nvrtc_version()?,
            libraries,
            kernels_cached,
            precision,
        };
        Ok(Cuda {
            loss_out: stream.alloc_zeros::<f64>(2).map_err(alloc_err)?,
            attention_scratch: Scratch::default(),
            norm_partials: Scratch::default(),
            transfer_count: AtomicU64::new(0),
            transfer_bytes: AtomicU64::new(0),
            _workspace: workspace,
            blas,
            kernels,
            stream,
            info,
            _module: module,
        })
    }

    /// The GPU, the driver, the compiler and the libraries in use.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn launcher(&self, name: &'static str) -> Launcher<'_> {
        Launcher::new(&self.stream, &self.kernels[name], name)
    }

    /// Copies between host and device memory since the backend started.
    pub fn transfers(&self) -> Transfers {
        Transfers {
            count: self.transfer_count.load(Ordering::Relaxed),
            bytes: self.transfer_bytes.load(Ordering::Relaxed),
        }
    }

    /// Count one copy of `host` (an empty one copies nothing and is not counted).
    fn count_transfer<T>(&self, host: &[T]) {
        if host.is_empty() {
            return;
        }
        self.transfer_count.fetch_add(1, Ordering::Relaxed);
        let bytes = std::mem::size_of_val(host) as u64;
        self.transfer_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Copy `host` to device address `dst` (counted).
    fn to_device<T>(&self, dst: u64, host: &[T]) -> std::result::Result<(), DriverError> {
        self.count_transfer(host);
        launch::upload(&self.stream, dst, host)
    }

    /// Copy `host.len()` values from device address `src` (counted).
    fn to_host<T>(&self, src: u64, host: &mut [T]) {
        self.count_transfer(host);
        launch::download(&self.stream, src, host)
    }

    /// RoPE in place: forward (`sign = 1`) or backward (`sign = -1`).
    fn rope(&self, x: DevViewMut<'_>, table: DevView<'_>, d: RopeDims, sign: f32) {
        let pairs = (d.rows * d.heads * (d.head_size / 2)) as u64;
        self.launcher("lmf_rope")
            .arg(x.addr)
            .arg(table.addr)
            .arg(d.rows as u64)
            .arg(d.t as u64)
            .arg(d.pos as u64)
            .arg(d.heads as u64)
            .arg(d.head_size as u64)
            .arg(d.row_stride as u64)
            .arg(sign)
            .run_elementwise(pairs);
    }

    fn alloc(&self, len: usize) -> Result<CudaBuf> {
        let slice = self.stream.alloc_zeros::<f32>(len.max(1)).map_err(|e| {
            driver_error(
                &format!("allocate {:.1} MB on the GPU", (len * F32) as f64 / 1e6),
                e,
            )
        })?;
        let addr = slice.device_ptr(&self.stream).0;
        Ok(CudaBuf {
            _slice: slice,
            addr,
            len,
        })
    }
}

/// A device buffer kept between calls and grown when a call needs more.
struct Scratch<T>(Mutex<Option<CudaSlice<T>>>);

impl<T> Default for Scratch<T> {
    fn default() -> Self {
        Scratch(Mutex::new(None))
    }
}

impl<T: DeviceRepr + ValidAsZeroBits> Scratch<T> {
    /// The address of at least `len` values (`what` names it in a panic).
    fn at_least(&self, stream: &Arc<CudaStream>, len: usize, what: &str) -> u64 {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if kept.as_ref().is_none_or(|s| s.len() < len) {
            let fresh = stream
                .alloc_zeros::<T>(len.max(1))
                .unwrap_or_else(|e| panic!("CUDA: no memory for {what}: {e}"));
            *kept = Some(fresh);
        }
        let scratch = kept.as_ref().expect("just allocated");
        scratch.device_ptr(stream).0
    }
}

fn driver_error(what: &str, e: DriverError) -> Error {
    Error::Cuda(format!("could not {what}: {e}"))
}

/// The CUDA version the driver supports, as `major * 1000 + minor * 10`.
fn driver_version() -> Result<i32> {
    let mut version = 0;
    // SAFETY: the driver library is loaded (probe) and `version` is a valid out pointer.
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) }
        .result()
        .map_err(|e| driver_error("ask the driver its version", e))?;
    Ok(version)
}

/// `(p, seed, stream)` of a dropout site, `p = 0` for none (the kernels' convention).
fn dropout_args(d: Option<Dropout>) -> (f32, u64, u64) {
    d.map_or((0.0, 0, 0), |d| (d.p, d.seed, d.stream))
}

fn act_kind(act: Activation) -> i32 {
    match act {
        Activation::Gelu => 0,
        Activation::Relu => 1,
        Activation::Silu => 2,
    }
}

/// The CUDA backend keeps every weight in f32: no packed weight exists
/// (`pack` refuses), so the packed kernels have nothing to run on.
pub enum NoPacked {}

fn no_packed(ty: WeightType) -> Error {
    Error::Cuda(format!(
        "--weights {} runs on the CPU backend (--device cpu); the GPU keeps f32 weights",
        ty.name()
    ))
}

fn operand(m: &Mat<DevView<'_>>) -> Operand {
    Operand::transposed_view(m.data.addr, m.rows, m.cols, m.row_stride, m.col_stride)
}

impl Backend for Cuda {
    type Buf = CudaBuf;
    type Ids = CudaIds;
    type View<'a> = DevView<'a>;
    type ViewMut<'a> = DevViewMut<'a>;
    type IdsView<'a> = IdsView<'a>;
    type Packed = NoPacked;

    fn zeros(&self, len: usize) -> Result<CudaBuf> {
        self.alloc(len)
    }

    fn upload(&self, host: Vec<f32>) -> Result<CudaBuf> {
        let buf = self.alloc(host.len())?;
        self.to_device(buf.addr, &host)
            .map_err(|e| driver_error("copy to the GPU", e))?;
        Ok(buf)
    }

    fn ids(&self, len: usize) -> Result<CudaIds> {
        let slice = self
            .stream
            .alloc_zeros::<u32>(len.max(1))
            .map_err(|e| driver_error("allocate token ids on the GPU", e))?;
        let addr = slice.device_ptr(&self.stream).0;
        Ok(CudaIds {
            _slice: slice,
            addr,
            len,
        })
    }

    fn len(buf: &CudaBuf) -> usize {
        buf.len
    }

    fn view(buf: &CudaBuf, range: Range<usize>) -> DevView<'_> {
        assert!(range.end <= buf.len, "view out of bounds");
        DevView {
            addr: buf.addr + (range.start * F32) as u64,
            len: range.len(),
            _buf: PhantomData,
        }
    }

    fn view_mut(buf: &mut CudaBuf, range: Range<usize>) -> DevViewMut<'_> {
        assert!(range.end <= buf.len, "view out of bounds");
        DevViewMut {
            addr: buf.addr + (range.start * F32) as u64,
            len: range.len(),
            _buf: PhantomData,
        }
    }

    fn view_from<'a>(view: DevView<'a>, start: usize) -> DevView<'a>
    where
        Self: 'a,
    {
        assert!(start <= view.len, "view out of bounds");
        DevView {
            addr: view.addr + (start * F32) as u64,
            len: view.len - start,
            _buf: PhantomData,
        }
    }

    fn view_pair_mut(
        buf: &mut CudaBuf,
        first: Range<usize>,
        second: Range<usize>,
    ) -> (DevViewMut<'_>, DevViewMut<'_>) {
        assert!(
            second.start >= first.end,
            "view_pair_mut: ranges out of order"
        );
        assert!(second.end <= buf.len, "view out of bounds");
        let at = |r: &Range<usize>| DevViewMut {
            addr: buf.addr + (r.start * F32) as u64,
            len: r.len(),
            _buf: PhantomData,
        };
        (at(&first), at(&second))
    }

    fn ids_view(ids: &CudaIds, range: Range<usize>) -> IdsView<'_> {
        assert!(range.end <= ids.len, "ids view out of bounds");
        IdsView {
            addr: ids.addr + (range.start * 4) as u64,
            len: range.len(),
            _ids: PhantomData,
        }
    }

    fn upload_ids(&self, ids: &mut CudaIds, at: usize, host: &[u32]) {
        assert!(at + host.len() <= ids.len, "upload_ids out of bounds");
        self.to_device(ids.addr + (at * 4) as u64, host)
            .unwrap_or_else(|e| panic!("CUDA: could not copy token ids to the GPU: {e}"));
    }

    fn download(&self, src: DevView<'_>, host: &mut [f32]) {
        assert_eq!(src.len, host.len(), "download: lengths differ");
        self.to_host(src.addr, host);
    }

    fn on_host<R>(&self, src: DevView<'_>, f: impl FnOnce(&[f32]) -> R) -> R {
        let mut host = vec![0.0; src.len];
        self.download(src, &mut host);
        f(&host)
    }

    fn fill(&self, dst: DevViewMut<'_>, value: f32) {
        let n = dst.len as u64;
        self.launcher("lmf_fill")
            .arg(dst.addr)
            .arg(value)
            .arg(n)
            .run_elementwise(n);
    }

    fn copy(&self, dst: DevViewMut<'_>, src: DevView<'_>) {
        assert_eq!(dst.len, src.len, "copy: lengths differ");
        launch::copy(&self.stream, dst.addr, src.addr, src.len * F32);
    }

    fn scale(&self, dst: DevViewMut<'_>, alpha: f32) {
        let n = dst.len as u64;
        self.launcher("lmf_scale")
            .arg(dst.addr)
            .arg(alpha)
            .arg(n)
            .run_elementwise(n);
    }

    fn add(&self, dst: DevViewMut<'_>, a: DevView<'_>, b: DevView<'_>) {
        let n = dst.len.min(a.len).min(b.len) as u64;
        self.launcher("lmf_add")
            .arg(dst.addr)
            .arg(a.addr)
            .arg(b.addr)
            .arg(n)
            .run_elementwise(n);
    }

    fn embedding_forward(
        &self,
        out: DevViewMut<'_>,
        idx: IdsView<'_>,
        wte: DevView<'_>,
        wpe: Option<DevView<'_>>,
        pos: usize,
        t: usize,
        c: usize,
    ) {
        let n = idx.len as u64;
        self.launcher("lmf_embedding_forward")
            .arg(out.addr)
            .arg(idx.addr)
            .arg(wte.addr)
            .arg(wpe.map_or(0, |w| w.addr))
            .arg(pos as u64)
            .arg(t as u64)
            .arg(c as u64)
            .arg(n)
            .run_elementwise(n * c as u64);
    }

    fn embedding_backward(
        &self,
        dwte: DevViewMut<'_>,
        dwpe: Option<DevViewMut<'_>>,
        dout: DevView<'_>,
        idx: IdsView<'_>,
        t: usize,
        c: usize,
    ) {
        let (n, c) = (idx.len as u64, c as u64);
        self.launcher("lmf_embedding_backward_wte")
            .arg(dwte.addr)
            .arg(dout.addr)
            .arg(idx.addr)
            .arg(c)
            .arg(n)
            .run_threads(c);
        if let Some(dwpe) = dwpe {
            let t = t as u64;
            self.launcher("lmf_embedding_backward_wpe")
                .arg(dwpe.addr)
                .arg(dout.addr)
                .arg(t)
                .arg(c)
                .arg(n)
                .run_threads(t * c);
        }
    }

    fn layernorm_forward(
        &self,
        out: DevViewMut<'_>,
        mean: DevViewMut<'_>,
        rstd: DevViewMut<'_>,
        inp: DevView<'_>,
        weight: DevView<'_>,
        bias: Option<DevView<'_>>,
        n: usize,
        c: usize,
        eps: f32,
    ) {
        self.launcher("lmf_layernorm_forward")
            .arg(out.addr)
            .arg(mean.addr)
            .arg(rstd.addr)
            .arg(inp.addr)
            .arg(weight.addr)
            .arg(bias.map_or(0, |b| b.addr))
            .arg(eps)
            .arg(n as u64)
            .arg(c as u64)
            .run_warps(n as u64);
    }

    fn layernorm_backward(
        &self,
        dinp: DevViewMut<'_>,
        dweight: Option<DevViewMut<'_>>,
        dbias: Option<DevViewMut<'_>>,
        dout: DevView<'_>,
        inp: DevView<'_>,
        weight: DevView<'_>,
        mean: DevView<'_>,
        rstd: DevView<'_>,
        n: usize,
        c: usize,
    ) {
        let (n, c) = (n as u64, c as u64);
        self.launcher("lmf_layernorm_backward_input")
            .arg(dinp.addr)
            .arg(dout.addr)
            .arg(inp.addr)
            .arg(weight.addr)
            .arg(mean.addr)
            .arg(rstd.addr)
            .arg(n)
            .arg(c)
            .run_warps(n);
        if let Some(dweight) = dweight {
            self.launcher("lmf_layernorm_backward_params")
                .arg(dweight.addr)
                .arg(dbias.map_or(0, |b| b.addr))
                .arg(dout.addr)
                .arg(inp.addr)
                .arg(mean.addr)
                .arg(rstd.addr)
                .arg(n)
                .arg(c)
                .run_columns(c);
        }
    }

    fn matmul(
        &self,
        dst: DevViewMut<'_>,
        lhs: Mat<DevView<'_>>,
        rhs: Mat<DevView<'_>>,
        acc: Accumulate,
        epilogue: Epilogue<'_, '_, Self>,
    ) {
        assert_eq!(lhs.cols, rhs.rows, "matmul: inner dimensions differ");
        if !matches!(epilogue, Epilogue::None) {
            assert_eq!(
                acc,
                Accumulate::Overwrite,
                "an epilogue writes its destination"
            );
        }
        let (m, n) = (lhs.rows as u64, rhs.cols as u64);
        let bias = match &epilogue {
            Epilogue::Bias(b) => Some(b.addr),
            Epilogue::Activation { bias, .. } => bias.map(|b| b.addr),
            _ => None,
        };
        let (a, b) = (operand(&rhs), operand(&lhs));
        launch::bind(&self.stream);
        self.blas
            .matmul(
                self.stream.cu_stream() as _,
                dst.addr,
                a,
                b,
                (n, m),
                acc == Accumulate::Add,
                bias,
            )
            .unwrap_or_else(|e| panic!("CUDA: {e}"));
        let len = m * n;
        match epilogue {
            Epilogue::Activation { act, out, .. } => self
                .launcher("lmf_act_forward")
                .arg(out.addr)
                .arg(dst.addr)
                .arg(act_kind(act))
                .arg(len)
                .run_elementwise(len),
            Epilogue::ActivationGrad { act, pre } => self
                .launcher("lmf_act_backward")
                .arg(dst.addr)
                .arg(pre.addr)
                .arg(act_kind(act))
                .arg(len)
                .run_elementwise(len),
            Epilogue::None | Epilogue::Bias(_) => {}
        }
    }

    fn pack(&self, _w: Mat<DevView<'_>>, ty: WeightType) -> Result<NoPacked> {
        Err(no_packed(ty))
    }

    fn repack(&self, dst: &mut NoPacked, _w: Mat<DevView<'_>>) -> Result<()> {
        match *dst {}
    }

    fn training_weights(&self) -> Option<WeightType> {
        None
    }

    fn pack_blocks(
        &self,
        ty: WeightType,
        _in_out: (usize, usize),
        _bytes: &[u8],
    ) -> Result<NoPacked> {
        Err(no_packed(ty))
    }

    fn matmul_packed(
        &self,
        _dst: DevViewMut<'_>,
        _lhs: Mat<DevView<'_>>,
        w: &NoPacked,
        _epilogue: Epilogue<'_, '_, Self>,
    ) {
        match *w {}
    }

    fn packed_rows(
        &self,
        _out: DevViewMut<'_>,
        _idx: IdsView<'_>,
        table: &NoPacked,
        _wpe: Option<DevView<'_>>,
        _pos: usize,
        _t: usize,
    ) {
        match *table {}
    }

    fn bias_backward(&self, dbias: DevViewMut<'_>, dout: DevView<'_>, n: usize, cols: usize) {
        self.launcher("lmf_bias_backward")
            .arg(dbias.addr)
            .arg(dout.addr)
            .arg(n as u64)
            .arg(cols as u64)
            .run_columns(cols as u64);
    }

    fn attention_forward(
        &self,
        out: DevViewMut<'_>,
        lse: DevViewMut<'_>,
        q: DevView<'_>,
        kv: DevView<'_>,
        dims: AttentionDims,
        dropout: Option<Dropout>,
    ) {
        launch::check_heads(dims);
        assert!(
            dims.pos == 0 || dims.b == 1,
            "only one sequence continues a cache"
        );
        let (p, seed, stream) = dropout_args(dropout);
        self.launcher("lmf_attention_forward")
            .arg(out.addr)
            .arg(lse.addr)
            .arg(q.addr)
            .arg(kv.addr)
            .arg(dims.t as u64)
            .arg(dims.pos as u64)
            .arg(dims.c as u64)
            .arg(dims.n_head as u64)
            .arg(dims.n_kv_head as u64)
            .arg(dims.q_stride as u64)
            .arg(dims.kv_stride as u64)
            .arg(dims.k_offset as u64)
            .arg(p)
            .arg(seed)
            .arg(stream)
            .run_rows(dims, dims.n_head);
    }

    /// One launch of the attention kernel per sequence, on its rows.
    fn attention_decode(
        &self,
        out: DevViewMut<'_>,
        lse: DevViewMut<'_>,
        q: DevView<'_>,
        caches: &[(DevView<'_>, AttentionDims)],
    ) {
        for (i, &(kv, dims)) in caches.iter().enumerate() {
            let (c, nh) = (dims.c, dims.n_head);
            let row = |view: &DevViewMut<'_>, width: usize| {
                assert!((i + 1) * width <= view.len, "view out of bounds");
                DevViewMut {
                    addr: view.addr + (i * width * F32) as u64,
                    len: width,
                    _buf: PhantomData,
                }
            };
            let q_row = Self::view_from(q, i * dims.q_stride);
            self.attention_forward(row(&out, c), row(&lse, nh), q_row, kv, dims, None);
        }
    }

    /// Training's layout: `qkv (B, T, C + 2 KVC)`, queries then keys then values.
    fn attention_backward(
        &self,
        dqkv: DevViewMut<'_>,
        dout: DevView<'_>,
        qkv: DevView<'_>,
        lse: DevView<'_>,
        dims: AttentionDims,
        dropout: Option<Dropout>,
    ) {
        launch::check_heads(dims);
        assert_eq!(dims.pos, 0, "attention backward runs on whole sequences");
        assert_eq!(
            dims.q_stride, dims.kv_stride,
            "attention backward reads one qkv"
        );
        let dsum = self.attention_scratch.at_least(
            &self.stream,
            dims.b * dims.n_head * dims.t,
            "attention's scratch",
        );
        let (p, seed, stream) = dropout_args(dropout);
        let passes = [
            ("lmf_attention_backward_q", dims.n_head),
            ("lmf_attention_backward_kv", dims.n_kv_head),
        ];
        for (kernel, heads) in passes {
            self.launcher(kernel)
                .arg(dqkv.addr)
                .arg(dsum)
                .arg(dout.addr)
                .arg(qkv.addr)
                .arg(lse.addr)
                .arg(dims.t as u64)
                .arg(dims.c as u64)
                .arg(dims.n_head as u64)
                .arg(dims.n_kv_head as u64)
                .arg(dims.q_stride as u64)
                .arg(dims.k_offset as u64)
                .arg(p)
                .arg(seed)
                .arg(stream)
                .run_rows(dims, heads);
        }
    }

    fn rmsnorm_forward(
        &self,
        out: DevViewMut<'_>,
        rstd: DevViewMut<'_>,
        inp: DevView<'_>,
        weight: DevView<'_>,
        n: usize,
        c: usize,
        eps: f32,
    ) {
        self.launcher("lmf_rmsnorm_forward")
            .arg(out.addr)
            .arg(rstd.addr)
            .arg(inp.addr)
            .arg(weight.addr)
            .arg(eps)
            .arg(n as u64)
            .arg(c as u64)
            .run_warps(n as u64);
    }

    fn rmsnorm_backward(
        &self,
        dinp: DevViewMut<'_>,
        dweight: Option<DevViewMut<'_>>,
        dout: DevView<'_>,
        inp: DevView<'_>,
        weight: DevView<'_>,
        rstd: DevView<'_>,
        n: usize,
        c: usize,
    ) {
        let (n, c) = (n as u64, c as u64);
        self.launcher("lmf_rmsnorm_backward_input")
            .arg(dinp.addr)
            .arg(dout.addr)
            .arg(inp.addr)
            .arg(weight.addr)
            .arg(rstd.addr)
            .arg(n)
            .arg(c)
            .run_warps(n);
        if let Some(dweight) = dweight {
            self.launcher("lmf_rmsnorm_backward_weight")
                .arg(dweight.addr)
                .arg(dout.addr)
                .arg(inp.addr)
                .arg(rstd.addr)
                .arg(n)
                .arg(c)
                .run_columns(c);
        }
    }

    fn rope_forward(&self, x: DevViewMut<'_>, table: DevView<'_>, dims: RopeDims) {
        self.rope(x, table, dims, 1.0)
    }

    fn rope_backward(&self, dx: DevViewMut<'_>, table: DevView<'_>, dims: RopeDims) {
        self.rope(dx, table, dims, -1.0)
    }

    fn swiglu_forward(&self, out: DevViewMut<'_>, fc: DevView<'_>, n: usize, i: usize) {
        let (n, i) = (n as u64, i as u64);
        self.launcher("lmf_swiglu_forward")
            .arg(out.addr)
            .arg(fc.addr)
            .arg(n)
            .arg(i)
            .run_elementwise(n * i);
    }

    fn swiglu_backward(
        &self,
        dfc: DevViewMut<'_>,
        dout: DevView<'_>,
        fc: DevView<'_>,
        n: usize,
        i: usize,
    ) {
        let (n, i) = (n as u64, i as u64);
        self.launcher("lmf_swiglu_backward")
            .arg(dfc.addr)
            .arg(dout.addr)
            .arg(fc.addr)
            .arg(n)
            .arg(i)
            .run_elementwise(n * i);
    }

    fn copy_columns(
        &self,
        dst: DevViewMut<'_>,
        src: DevView<'_>,
        (rows, cols): (usize, usize),
        (src_stride, first): (usize, usize),
    ) {
        assert!(
            dst.len >= rows * cols,
            "copy_columns: destination too short"
        );
        let (rows, cols) = (rows as u64, cols as u64);
        self.launcher("lmf_copy_columns")
            .arg(dst.addr)
            .arg(src.addr)
            .arg(rows)
            .arg(cols)
            .arg(src_stride as u64)
            .arg(first as u64)
            .run_elementwise(rows * cols);
    }

    fn residual(&self, branch: DevViewMut<'_>, skip: DevView<'_>, dropout: Option<Dropout>) {
        let n = branch.len.min(skip.len) as u64;
        let (p, seed, stream) = dropout_args(dropout);
        self.launcher("lmf_residual")
            .arg(branch.addr)
            .arg(skip.addr)
            .arg(p)
            .arg(seed)
            .arg(stream)
            .arg(n)
            .run_elementwise(n);
    }

    fn dropout(&self, x: DevViewMut<'_>, d: Dropout) {
        let n = x.len as u64;
        self.launcher("lmf_dropout")
            .arg(x.addr)
            .arg(d.p)
            .arg(d.seed)
            .arg(d.stream)
            .arg(n)
            .run_elementwise(n);
    }

    fn cross_entropy(
        &self,
        losses: DevViewMut<'_>,
        logits: DevViewMut<'_>,
        targets: IdsView<'_>,
        v: usize,
        dloss: Option<f32>,
    ) -> f32 {
        let n = targets.len as u64;
        self.launcher("lmf_cross_entropy")
            .arg(losses.addr)
            .arg(logits.addr)
            .arg(targets.addr)
            .arg(v as u64)
            .arg(i32::from(dloss.is_some()))
            .arg(dloss.unwrap_or(0.0))
            .run_blocks(n as u32, 256);
        let out = self.loss_out.device_ptr(&self.stream).0;
        self.launcher("lmf_loss_sum")
            .arg(out)
            .arg(losses.read().addr)
            .arg(targets.addr)
            .arg(n)
            .run_blocks(1, 1024);
        let mut sum_count = [0.0f64; 2];
        self.to_host(out, &mut sum_count);
        (sum_count[0] / sum_count[1].max(1.0)) as f32
    }

    /// On the device, one block per chunk; only the partial sums come back.
    fn sum_of_squares(&self, grads: DevView<'_>, partials: &mut [f64]) {
        let chunks = grads.len.div_ceil(NORM_CHUNK);
        assert_eq!(
            partials.len(),
            chunks,
            "sum_of_squares: one partial per chunk"
        );
        let out = self
            .norm_partials
            .at_least(&self.stream, chunks, "the gradient norm");
        self.launcher("lmf_sum_of_squares")
            .arg(out)
            .arg(grads.addr)
            .arg(grads.len as u64)
            .arg(NORM_CHUNK as u64)
            .run_blocks(chunks as u32, 256);
        self.to_host(out, partials);
    }

    fn adamw(
        &self,
        params: DevViewMut<'_>,
        grads: DevView<'_>,
        m: DevViewMut<'_>,
        v: DevViewMut<'_>,
        groups: &[ParamGroup],
        step: AdamWStep,
        norm: f32,
    ) {
        // The clip factor as the CPU computes it; 0 (update nothing) for a
        // non-finite norm. A launch argument: no copy to the device.
        let factor = match (norm.is_finite(), step.grad_clip > 0.0) {
            (false, _) => 0.0,
            (true, true) => (step.grad_clip / (norm + 1e-6)).min(1.0),
            (true, false) => 1.0,
        };
        let bias1 = 1.0 - step.beta1.powi(step.t as i32);
        let bias2_sqrt = (1.0 - step.beta2.powi(step.t as i32)).sqrt();
        for group in groups {
            let decay = if group.decays {
                step.lr * step.weight_decay
            } else {
                0.0
            };
            let at = (group.range.start * F32) as u64;
            let n = group.range.len() as u64;
            self.launcher("lmf_adamw")
                .arg(params.addr + at)
                .arg(grads.addr + at)
                .arg(m.addr + at)
                .arg(v.addr + at)
                .arg(factor)
                .arg(step.lr)
                .arg(step.beta1)
                .arg(step.beta2)
                .arg(step.eps)
                .arg(decay)
                .arg(bias1)
                .arg(bias2_sqrt)
                .arg(n)
                .run_elementwise(n);
        }
    }

    fn on_host_mut<R>(&self, dst: DevViewMut<'_>, f: impl FnOnce(&mut [f32]) -> R) -> R {
        let mut host = vec![0.0; dst.len];
        self.to_host(dst.addr, &mut host);
        let result = f(&mut host);
        self.to_device(dst.addr, &host)
            .unwrap_or_else(|e| panic!("CUDA: could not copy values back to the GPU: {e}"));
        result
    }

    fn run<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        work()
    }
}
