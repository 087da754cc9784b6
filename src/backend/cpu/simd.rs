//! The instruction set, chosen at run time, and one SIMD register of floats.
//!
//! The crate is built for a portable baseline (x86-64-v2, see
//! `.cargo/config.toml`), so one binary runs on any x86-64 CPU. The hot
//! kernels are compiled three times over, once per [`Level`], and the best
//! level this CPU has is picked once, on first use:
//!
//! | level | instructions added to the baseline | [`Vector`] lanes |
//! |---|---|---|
//! | `portable` | none (the build's own target) | 8, a plain array |
//! | `avx2` | x86-64-v3: AVX2, FMA, BMI1/2, F16C | 8 (`__m256`) |
//! | `avx512` | x86-64-v4: AVX-512 F/BW/CD/DQ/VL | 16 (`__m512`) |
//!
//! `LMFORGE_SIMD=portable|avx2|avx512` (or [`set_level`]) asks for a lower
//! level, for tests and benchmarks; a level the CPU lacks is refused. This file
//! is the only place with `std::arch` intrinsics and `#[target_feature]`.
//!
//! ## Writing a kernel: the dispatch API
//! - **Element-wise loops** the compiler vectorises: wrap the loop (the body
//!   of one thread's work) in [`vectorised!`]: `vectorised!({ for .. { .. } })`.
//!   The block is compiled once per level; each run takes the chosen one.
//!   Helpers it calls must be `#[inline(always)]` (as `math`'s are) to be
//!   compiled with it.
//! - **Register kernels** that hold accumulators in registers: write the body
//!   once, generic over `V: Vector`, in a struct that implements [`Kernel`];
//!   [`dispatch`] runs `kernel.run::<V>()` with the chosen level's vector.
//!
//! Results are fixed by the thread count and the level. Element-wise loops
//! give the same numbers at every level (the compiler keeps the order of
//! float operations; `mul_add` fuses only in a `target-cpu` build with FMA);
//! [`Vector`] kernels do not: their `mul_add` is fused at `avx2` and `avx512`
//! and [`Vector::sum`] adds 8 or 16 lanes.
//!
//! | [`Vector`] operation | meaning |
//! |---|---|
//! | `V::ZERO`, `V::splat(v)` | all lanes 0, all lanes `v` |
//! | `V::chunks(s)`, `V::chunks_mut(s)` | a slice as `[f32; LANES]` arrays |
//! | `V::load(&array)` | the lanes, read from memory |
//! | `a.mul_add(x, y)` | `a + x * y`, lane by lane |
//! | `a.sum()` | the lanes added pairwise, in a fixed order |
//! | `a.store(&mut array)` | the lanes, written out |
//! | `prefetch(data, at)` | a hint to start loading `data[at]`'s cache line |
//!
//! Quantized weights (`backend/cpu/quant.rs`) have their own small API,
//! [`GroupDot`] and [`dispatch_groups_at`]: integer dot products of 16
//! outputs' blocks of 32 values at once (AVX2's `vpmaddubsw`, or
//! AVX512_VNNI's `vpdpbusd` where the CPU has it).

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction set level, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Portable,
    Avx2,
    Avx512,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Portable, Level::Avx2, Level::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Level::Portable => "portable",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// The level named `name` (`portable`, `avx2` or `avx512`).
    pub fn parse(name: &str) -> Result<Level> {
        Level::ALL
            .into_iter()
            .find(|l| l.name() == name.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown SIMD level {name:?}: expected portable, avx2 or avx512"
                ))
            })
    }

    /// Whether this CPU can run the level's code.
    pub fn available(self) -> bool {
        self <= detected()
    }
}

/// The best level this CPU has.
#[cfg(target_arch = "x86_64")]
fn detected() -> Level {
    use std::arch::is_x86_feature_detected as has;
    let v3 = has!("avx2") && has!("fma") && has!("bmi1") && has!("bmi2") && has!("f16c");
    let v3 = v3 && has!("lzcnt") && has!("movbe");
    let v4 = has!("avx512f") && has!("avx512bw") && has!("avx512cd") && has!("avx512dq");
    match (v3, v4 && has!("avx512vl")) {
        (true, true) => Level::Avx512,
        (true, false) => Level::Avx2,
        _ => Level::Portable,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detected() -> Level {
    Level::Portable
}

/// The chosen level as `Level as u8 + 1`; 0 until first use.
static CHOSEN: AtomicU8 = AtomicU8::new(0);

/// The level the kernels run at: the best this CPU has, or the one
/// `LMFORGE_SIMD` asks for (decided on first use; an unknown or unavailable
/// name there is ignored here and reported by [`level_from_env`]).
#[inline]
pub fn level() -> Level {
    match CHOSEN.load(Ordering::Relaxed) {
        0 => {
            let level = level_from_env().ok().flatten().unwrap_or_else(detected);
            CHOSEN.store(level as u8 + 1, Ordering::Relaxed);
            level
        }
        n => Level::ALL[n as usize - 1],
    }
}

/// The level `LMFORGE_SIMD` asks for (`None` when unset), or an error saying
/// why it cannot be used.
pub fn level_from_env() -> Result<Option<Level>> {
    let Ok(name) = std::env::var("LMFORGE_SIMD") else {
        return Ok(None);
    };
    let level = Level::parse(&name)?;
    match level.available() {
        true => Ok(Some(level)),
        false => Err(Error::Config(format!(
            "LMFORGE_SIMD={name}: this CPU's best level is {}",
            detected().name()
        ))),
    }
}

/// Run the kernels at `level` from now on (kernels already running finish at
/// theirs). Refused for a level this CPU lacks.
pub fn set_level(level: Level) -> Result<()> {
    if !level.available() {
        return Err(Error::Config(format!(
            "SIMD level {} is not available: this CPU's best is {}",
            level.name(),
            detected().name()
        )));
    }
    CHOSEN.store(level as u8 + 1, Ordering::Relaxed);
    Ok(())
}

/// A kernel written once for any [`Vector`]; [`dispatch`] picks which.
pub trait Kernel {
    type Output;
    /// The kernel's body. Mark it `#[inline(always)]`, so that it is
    /// compiled inside each level's function (with that level's instructions).
    fn run<V: Vector>(self) -> Self::Output;
}

/// Run `kernel` with the chosen level's [`Vector`], compiled for that level.
#[inline(always)]
pub fn dispatch<K: Kernel>(kernel: K) -> K::Output {
    match level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level()` returns only levels the CPU has (`detected`, or
        // one `set_level`/`level_from_env` checked against it).
        Level::Avx512 => unsafe { x86::run_avx512(kernel) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Level::Avx2 => unsafe { x86::run_avx2(kernel) },
        _ => kernel.run::<Portable>(),
    }
}

/// Evaluate a block compiled for the chosen level (see the module docs):
/// `vectorised!({ for (o, x) in out.iter_mut().zip(inp) { *o = f(*x) } })`.
macro_rules! vectorised {
    ($body:block) => {
        $crate::backend::cpu::simd::dispatch($crate::backend::cpu::simd::Block(
            #[inline(always)]
            || $body,
        ))
    };
}
pub(crate) use vectorised;

/// A closure as a [`Kernel`] that ignores the vector type (for [`vectorised!`]).
pub struct Block<F>(pub F);

// `FnMut`, not `FnOnce`: calling a closure through `FnOnce` goes through a
// shim that the compiler may leave out of line, and then the block would run
// as the baseline's code at every level.
impl<R, F: FnMut() -> R> Kernel for Block<F> {
    type Output = R;
    #[inline(always)]
    fn run<V: Vector>(mut self) -> R {
        (self.0)()
    }
}

/// One SIMD register of `LANES` floats (see the table in the module docs).
/// The implementations for `avx2` and `avx512` are private to this file, so
/// a kernel can only get them from [`dispatch`], after the CPU was checked.
pub trait Vector: Copy {
    const LANES: usize;
    /// `[f32; LANES]`.
    type Array: Copy + Default + AsRef<[f32]> + AsMut<[f32]>;
    const ZERO: Self;
    fn splat(v: f32) -> Self;
    fn load(from: &Self::Array) -> Self;
    fn store(self, to: &mut Self::Array);
    fn mul_add(self, a: Self, b: Self) -> Self;

    /// `s` as whole vectors (a tail shorter than `LANES` is left out).
    fn chunks(s: &[f32]) -> &[Self::Array];
    fn chunks_mut(s: &mut [f32]) -> &mut [Self::Array];

    /// The sum of the lanes, halving pairwise (a fixed order for a given
    /// `LANES`).
    #[inline(always)]
    fn sum(self) -> f32 {
        let mut array = Self::Array::default();
        self.store(&mut array);
        let lanes = array.as_mut();
        let mut width = Self::LANES;
        while width > 1 {
            width /= 2;
            for l in 0..width {
                lanes[l] += lanes[l + width];
            }
        }
        lanes[0]
    }
}

/// `chunks` and `chunks_mut` for a vector of `$lanes` floats.
macro_rules! array_chunks {
    ($lanes:literal) => {
        type Array = [f32; $lanes];

        #[inline(always)]
        fn chunks(s: &[f32]) -> &[[f32; $lanes]] {
            s.as_chunks::<$lanes>().0
        }

        #[inline(always)]
        fn chunks_mut(s: &mut [f32]) -> &mut [[f32; $lanes]] {
            s.as_chunks_mut::<$lanes>().0
        }
    };
}

/// The `portable` level's vector: 8 floats in an array, which the compiler
/// keeps in registers of whatever width the build's baseline has.
#[derive(Clone, Copy)]
pub struct Portable([f32; 8]);

impl Vector for Portable {
    const LANES: usize = 8;
    const ZERO: Self = Portable([0.0; 8]);
    array_chunks!(8);

    #[inline(always)]
    fn splat(v: f32) -> Self {
        Portable([v; 8])
    }

    #[inline(always)]
    fn load(from: &[f32; 8]) -> Self {
        Portable(*from)
    }

    #[inline(always)]
    fn store(self, to: &mut [f32; 8]) {
        *to = self.0;
    }

    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        use super::math::mul_add;
        Portable(std::array::from_fn(|l| mul_add(a.0[l], b.0[l], self.0[l])))
    }
}

/// Products of bfloat16 pairs summed into 16 f32 lanes: the operation of
/// AVX512_BF16's `vdpbf16ps`. Each 32-bit lane of a [`PairDot::Pairs`] holds
/// two bf16 numbers, the even-indexed one in the low half:
///
/// ```text
/// acc[l] = (acc[l] + a_odd[l] * b_odd[l]) + a_even[l] * b_even[l]
/// ```
///
/// A product of two bf16 numbers (8 significant bits each) is exact in f32,
/// so only the two additions round, in this order: the portable code gives
/// the instruction's bits, except in f32's subnormal range, which the
/// instruction flushes to 0 (checked on this CPU in `tests/simd_levels.rs`).
pub trait PairDot: Copy {
    /// 16 lanes of two bf16 numbers each.
    type Pairs: Copy;
    const ZERO: Self;
    fn load_pairs(from: &[u32; 16]) -> Self::Pairs;
    fn splat_pair(pair: u32) -> Self::Pairs;
    /// `self + a . b`, pair by pair, in the order above.
    fn dot(self, a: Self::Pairs, b: Self::Pairs) -> Self;
    fn store(self, to: &mut [f32; 16]);
}

/// A kernel written once for any [`PairDot`]; [`dispatch_pairs`] picks which.
pub trait PairKernel {
    type Output;
    /// Mark it `#[inline(always)]`, as [`Kernel::run`].
    fn run<D: PairDot>(self) -> Self::Output;
}

/// Whether bf16 products run on AVX512_BF16 (`vdpbf16ps`): the CPU has it
/// and the chosen level is `avx512`. Otherwise they run as portable code at
/// the chosen level (the same numbers, more instructions).
pub fn pairs_in_hardware() -> bool {
    level() == Level::Avx512 && has_avx512_bf16()
}

#[cfg(target_arch = "x86_64")]
fn has_avx512_bf16() -> bool {
    std::arch::is_x86_feature_detected!("avx512bf16")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx512_bf16() -> bool {
    false
}

/// Whether the CPU is AMD's (CPUID vendor "AuthenticAMD"). Its memory
/// prefetchers follow fewer streams at once than Intel's, so the few-row
/// products walk their weights differently there (`few_rows.rs`); the
/// numbers are the same either way.
#[cfg(target_arch = "x86_64")]
pub fn amd() -> bool {
    let vendor = std::arch::x86_64::__cpuid(0);
    let bytes = [vendor.ebx, vendor.edx, vendor.ecx].map(u32::to_le_bytes);
    bytes.concat() == b"AuthenticAMD"
}

#[cfg(not(target_arch = "x86_64"))]
pub fn amd() -> bool {
    false
}

/// Run `kernel` with AVX512_BF16 where [`pairs_in_hardware`], else with the
/// portable [`PairDot`] compiled for the chosen level.
#[inline(always)]
pub fn dispatch_pairs<K: PairKernel>(kernel: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    if pairs_in_hardware() {
        // SAFETY: `pairs_in_hardware` checked AVX512_BF16 and the avx512 level.
        return unsafe { x86::run_avx512_bf16(kernel) };
    }
    dispatch(PortablyPaired(kernel))
}

/// A [`PairKernel`] run with [`PortablePairs`], as a [`Kernel`] (so it is
/// compiled once per level).
struct PortablyPaired<K>(K);

impl<K: PairKernel> Kernel for PortablyPaired<K> {
    type Output = K::Output;
    #[inline(always)]
    fn run<V: Vector>(self) -> K::Output {
        self.0.run::<PortablePairs>()
    }
}

/// The portable [`PairDot`]: 16 floats in an array.
#[derive(Clone, Copy)]
pub struct PortablePairs([f32; 16]);

impl PairDot for PortablePairs {
    type Pairs = [u32; 16];
    const ZERO: Self = PortablePairs([0.0; 16]);

    #[inline(always)]
    fn load_pairs(from: &[u32; 16]) -> [u32; 16] {
        *from
    }

    #[inline(always)]
    fn splat_pair(pair: u32) -> [u32; 16] {
        [pair; 16]
    }

    #[inline(always)]
    fn dot(self, a: [u32; 16], b: [u32; 16]) -> Self {
        let odd = |p: u32| f32::from_bits(p & 0xffff_0000);
        let even = |p: u32| f32::from_bits(p << 16);
        PortablePairs(std::array::from_fn(|l| {
            (self.0[l] + odd(a[l]) * odd(b[l])) + even(a[l]) * even(b[l])
        }))
    }

    #[inline(always)]
    fn store(self, to: &mut [f32; 16]) {
        *to = self.0;
    }
}

/// Outputs per group of a quantized matrix (`quant.rs`): the 16 `i32`
/// lanes of one 512-bit register.
pub const GROUP: usize = 16;

/// Bytes of one group's block (16 outputs by 32 inputs): 16 f16 scales,
/// then the quantized values, 4 input bytes per output lane:
///
/// | type | bytes | chunk `k` (64 bytes), lane `o`, byte `t` |
/// |---|---|---|
/// | Q8_0 | 32 + 8 x 64 = 544 | `q[o][4k + t] + 128` (an unsigned byte) |
/// | Q4_0 | 32 + 4 x 64 = 288 | low nibble `q[o][4k + t] + 8`, high nibble `q[o][16 + 4k + t] + 8` |
pub const Q8_0_GROUP_BYTES: usize = 32 + 8 * 64;
pub const Q4_0_GROUP_BYTES: usize = 32 + 4 * 64;

/// Where a group block keeps byte `j` of output `lane`'s ggml values (Q8_0:
/// value `j`; Q4_0: the byte of values `j` and `j + 16`): chunk `j / 4`,
/// lane `lane`, byte `j % 4`, after the 32 bytes of scales.
#[inline(always)]
pub fn group_byte(lane: usize, j: usize) -> usize {
    32 + 64 * (j / 4) + 4 * lane + j % 4
}

/// One block of a row of `x` quantized to Q8_0: 32 values, their scale and
/// the terms that take the weights' `+128` or `+8` offset back off. The
/// kernels read `d` and the offset terms where they lie, broadcast from memory.
#[derive(Clone, Copy)]
pub struct XBlock<'a> {
    pub q: &'a [i8; 32],
    pub d: &'a f32,
    /// `[-128 sum x, -8 sum x]`: see [`Q8_0_TERM`] and [`Q4_0_TERM`].
    pub minus_offset: &'a [i32; 2],
}

/// Which of [`XBlock::minus_offset`] a Q8_0 and a Q4_0 group block takes.
pub const Q8_0_TERM: usize = 0;
pub const Q4_0_TERM: usize = 1;

/// Dot products of one group's block with blocks of `R` rows of `x`, added
/// into 16 f32 lanes per row, one lane per output `o`:
///
/// ```text
/// s[r][o]   = sum_j u[o][j] x[r][j] - offset * sum_j x[r][j]   (exact, in i32)
/// acc[r][o] = acc[r][o] + (dw[o] * dx[r]) * s[r][o]            (never fused)
/// ```
///
/// `u` is the stored unsigned byte (`q + offset`, offset 128 for Q8_0 and 8
/// for Q4_0), as AVX512_VNNI's `vpdpbusd` multiplies unsigned by signed
/// bytes. Integer sums are exact and the f32 steps are the same at every
/// level, so every level gives the same bits.
pub trait GroupDot: Copy {
    const ZERO: Self;
    fn q8_0<const R: usize>(
        acc: [Self; R],
        w: &[u8; Q8_0_GROUP_BYTES],
        x: [XBlock; R],
    ) -> [Self; R];
    fn q4_0<const R: usize>(
        acc: [Self; R],
        w: &[u8; Q4_0_GROUP_BYTES],
        x: [XBlock; R],
    ) -> [Self; R];
    /// The first `to.len()` (at most 16) lanes.
    fn store(self, to: &mut [f32]);
}

/// A kernel written once for any [`GroupDot`]; [`dispatch_groups_at`] picks which.
pub trait GroupKernel {
    type Output;
    /// Mark it `#[inline(always)]`, as [`Kernel::run`].
    fn run<D: GroupDot>(self) -> Self::Output;
}

/// Which [`GroupDot`] runs: the portable one, AVX2's `vpmaddubsw`, or
/// AVX512_VNNI's `vpdpbusd` on 512-bit registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockLevel {
    Portable,
    Avx2,
    Avx512Vnni,
}

impl BlockLevel {
    pub const ALL: [BlockLevel; 3] = [
        BlockLevel::Portable,
        BlockLevel::Avx2,
        BlockLevel::Avx512Vnni,
    ];

    /// The one the chosen [`Level`] runs: `avx512` with VNNI where the CPU has it.
    pub fn chosen() -> BlockLevel {
        match level() {
            Level::Avx512 if has_avx512_vnni() => BlockLevel::Avx512Vnni,
            Level::Avx512 | Level::Avx2 => BlockLevel::Avx2,
            Level::Portable => BlockLevel::Portable,
        }
    }

    /// Whether this CPU can run it.
    pub fn available(self) -> bool {
        match self {
            BlockLevel::Portable => true,
            BlockLevel::Avx2 => Level::Avx2.available(),
            BlockLevel::Avx512Vnni => Level::Avx512.available() && has_avx512_vnni(),
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx512_vnni() -> bool {
    std::arch::is_x86_feature_detected!("avx512vnni")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx512_vnni() -> bool {
    false
}

/// Run `kernel` with the [`GroupDot`] of `level` ([`BlockLevel::chosen`]
/// outside tests); panics if the CPU lacks it.
#[inline(always)]
pub fn dispatch_groups_at<K: GroupKernel>(level: BlockLevel, kernel: K) -> K::Output {
    assert!(level.available(), "{level:?} is not available on this CPU");
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available` checked the CPU's features just above.
        BlockLevel::Avx512Vnni => unsafe { x86::run_groups_vnni(kernel) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        BlockLevel::Avx2 => unsafe { x86::run_groups_avx2(kernel) },
        _ => kernel.run::<PortableGroup>(),
    }
}

/// The 16 f16 scales that open a group's block, as f32.
#[inline(always)]
fn group_scales(w: &[u8]) -> [f32; GROUP] {
    std::array::from_fn(|o| half::f16::from_le_bytes([w[2 * o], w[2 * o + 1]]).to_f32())
}

/// `acc + (dw dx) s`, lane by lane: the last step of every level.
#[inline(always)]
fn scaled_sums(acc: [f32; GROUP], dw: [f32; GROUP], x: XBlock, s: [i32; GROUP]) -> [f32; GROUP] {
    std::array::from_fn(|o| acc[o] + (dw[o] * *x.d) * s[o] as f32)
}

/// The portable [`GroupDot`]: 16 f32 lanes in an array.
#[derive(Clone, Copy)]
pub struct PortableGroup([f32; GROUP]);

impl PortableGroup {
    /// [`GroupDot`]'s formula with `value(o, j)` the stored unsigned value.
    #[inline(always)]
    fn add<const R: usize>(
        acc: [Self; R],
        w: &[u8],
        x: [XBlock; R],
        term: usize,
        value: impl Fn(usize, usize) -> i32,
    ) -> [Self; R] {
        let dw = group_scales(w);
        std::array::from_fn(|r| {
            let s = std::array::from_fn(|o| {
                let dot: i32 = (0..32).map(|j| value(o, j) * x[r].q[j] as i32).sum();
                dot + x[r].minus_offset[term]
            });
            PortableGroup(scaled_sums(acc[r].0, dw, x[r], s))
        })
    }
}

impl GroupDot for PortableGroup {
    const ZERO: Self = PortableGroup([0.0; GROUP]);

    #[inline(always)]
    fn q8_0<const R: usize>(
        acc: [Self; R],
        w: &[u8; Q8_0_GROUP_BYTES],
        x: [XBlock; R],
    ) -> [Self; R] {
        Self::add(acc, w, x, Q8_0_TERM, |o, j| w[group_byte(o, j)] as i32)
    }

    #[inline(always)]
    fn q4_0<const R: usize>(
        acc: [Self; R],
        w: &[u8; Q4_0_GROUP_BYTES],
        x: [XBlock; R],
    ) -> [Self; R] {
        Self::add(acc, w, x, Q4_0_TERM, |o, j| {
            let byte = w[group_byte(o, j % 16)];
            (if j < 16 { byte & 15 } else { byte >> 4 }) as i32
        })
    }

    #[inline(always)]
    fn store(self, to: &mut [f32]) {
        to.copy_from_slice(&self.0[..to.len()]);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{
        GroupDot, GroupKernel, Kernel, PairDot, PairKernel, Q4_0_GROUP_BYTES, Q4_0_TERM,
        Q8_0_GROUP_BYTES, Q8_0_TERM, Vector, XBlock,
    };
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx,avx2,fma,bmi1,bmi2,f16c,lzcnt,movbe")]
    pub(super) unsafe fn run_groups_avx2<K: GroupKernel>(kernel: K) -> K::Output {
        kernel.run::<Avx2Group>()
    }

    #[target_feature(enable = "avx,avx2,fma,bmi1,bmi2,f16c,lzcnt,movbe")]
    #[target_feature(enable = "avx512f,avx512bw,avx512cd,avx512dq,avx512vl,avx512vnni")]
    pub(super) unsafe fn run_groups_vnni<K: GroupKernel>(kernel: K) -> K::Output {
        kernel.run::<VnniGroup>()
    }

    // SAFETY (every `unsafe` below): an `Avx2Group` exists only inside
    // `run_groups_avx2` or `run_groups_vnni`, a `VnniGroup` only inside
    // `run_groups_vnni` (private types; `ZERO` is plain bits), which run only
    // on CPUs with those features; loads read within the arrays' bytes
    // (checked offsets into fixed-size arrays).
    #[derive(Clone, Copy)]
    pub(super) struct Avx2Group([__m256; 2]);

    #[derive(Clone, Copy)]
    pub(super) struct VnniGroup(__m512);

    /// Bytes `at..at + 4` of a row of `x`, in every 32-bit lane.
    #[inline(always)]
    fn x4(q: &[i8; 32], at: usize) -> i32 {
        let b = &q[at..at + 4];
        i32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
    }

    /// 32 bytes from `at`.
    #[inline(always)]
    fn load32(w: &[u8], at: usize) -> __m256i {
        let b = &w[at..at + 32];
        unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
    }

    /// 64 bytes from `at`.
    #[inline(always)]
    fn load64(w: &[u8], at: usize) -> __m512i {
        let b = &w[at..at + 64];
        unsafe { _mm512_loadu_si512(b.as_ptr().cast()) }
    }

    impl VnniGroup {
        /// Each row's integer sums start from its offset term (a broadcast
        /// load, no arithmetic). With 8 rows or more, 8 independent chains of
        /// `vpdpbusd` keep the unit busy; fewer rows take two chains each
        /// (even and odd chunks), halving the dependent chain.
        #[inline(always)]
        fn start<const R: usize>(x: [XBlock; R], term: usize) -> [[__m512i; 2]; R] {
            let mut s = [[unsafe { _mm512_setzero_si512() }; 2]; R];
            for r in 0..R {
                s[r][0] = unsafe { _mm512_set1_epi32(x[r].minus_offset[term]) };
            }
            s
        }

        /// Chains per row: see [`VnniGroup::start`].
        const fn chains(rows: usize) -> usize {
            if rows >= 8 { 1 } else { 2 }
        }

        /// Each row's sum of its `chains` sums.
        #[inline(always)]
        fn joined<const R: usize>(s: [[__m512i; 2]; R], chains: usize) -> [__m512i; R] {
            let mut joined = [unsafe { _mm512_setzero_si512() }; R];
            for r in 0..R {
                joined[r] = match chains {
                    1 => s[r][0],
                    _ => unsafe { _mm512_add_epi32(s[r][0], s[r][1]) },
                };
            }
            joined
        }

        /// `acc + (dw dx) s`, from the `i32` sums `s` (offset included).
        #[inline(always)]
        fn finish<const R: usize>(
            mut acc: [Self; R],
            w: &[u8],
            x: [XBlock; R],
            s: [__m512i; R],
        ) -> [Self; R] {
            // Loops, not closures: a closure is compiled without this
            // level's features, and its intrinsics would become calls.
            unsafe {
                let dw = _mm512_cvtph_ps(load32(w, 0));
                for r in 0..R {
                    let d = _mm512_mul_ps(dw, _mm512_set1_ps(*x[r].d));
                    acc[r].0 = _mm512_add_ps(acc[r].0, _mm512_mul_ps(d, _mm512_cvtepi32_ps(s[r])));
                }
                acc
            }
        }
    }

    impl GroupDot for VnniGroup {
        const ZERO: Self =
            VnniGroup(unsafe { std::mem::transmute::<[f32; 16], __m512>([0.0; 16]) });

        #[inline(always)]
        fn q8_0<const R: usize>(
            acc: [Self; R],
            w: &[u8; Q8_0_GROUP_BYTES],
            x: [XBlock; R],
        ) -> [Self; R] {
            unsafe {
                let mut s = Self::start(x, Q8_0_TERM);
                for k in 0..8 {
                    let wk = load64(w, 32 + 64 * k);
                    let chain = k % Self::chains(R);
                    for r in 0..R {
                        let x = _mm512_set1_epi32(x4(x[r].q, 4 * k));
                        s[r][chain] = _mm512_dpbusd_epi32(s[r][chain], wk, x);
                    }
                }
                Self::finish(acc, w, x, Self::joined(s, Self::chains(R)))
            }
        }

        #[inline(always)]
        fn q4_0<const R: usize>(
            acc: [Self; R],
            w: &[u8; Q4_0_GROUP_BYTES],
            x: [XBlock; R],
        ) -> [Self; R] {
            unsafe {
                // Low and high nibbles in two sums per row (one chain each).
                let mut s = Self::start(x, Q4_0_TERM);
                let nibble = _mm512_set1_epi8(15);
                for k in 0..4 {
                    let packed = load64(w, 32 + 64 * k);
                    let low = _mm512_and_si512(packed, nibble);
                    let high = _mm512_and_si512(_mm512_srli_epi16(packed, 4), nibble);
                    for r in 0..R {
                        let (xl, xh) = (x4(x[r].q, 4 * k), x4(x[r].q, 16 + 4 * k));
                        s[r][0] = _mm512_dpbusd_epi32(s[r][0], low, _mm512_set1_epi32(xl));
                        s[r][1] = _mm512_dpbusd_epi32(s[r][1], high, _mm512_set1_epi32(xh));
                    }
                }
                Self::finish(acc, w, x, Self::joined(s, 2))
            }
        }

        /// One masked store (a copy through an array would call `memcpy`
        /// for every row of every group).
        #[inline(always)]
        fn store(self, to: &mut [f32]) {
            let mask = (1u32 << to.len().min(16)) - 1;
            // SAFETY: the mask writes lanes `0..to.len()` only; masked-off
            // lanes are neither written nor able to fault.
            unsafe { _mm512_mask_storeu_ps(to.as_mut_ptr(), mask as __mmask16, self.0) };
        }
    }

    impl Avx2Group {
        /// `sum of 4 byte products` per 32-bit lane, unsigned `u` by signed `x`
        /// (`vpmaddubsw` then `vpmaddwd`; pairs stay within `i16`).
        #[inline(always)]
        fn quads(u: __m256i, x: __m256i) -> __m256i {
            unsafe { _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1)) }
        }

        /// As [`VnniGroup::finish`], per half of 8 outputs, adding the offset
        /// term first (none for Q8_0's signed weights).
        #[inline(always)]
        fn finish<const R: usize>(
            mut acc: [Self; R],
            w: &[u8],
            x: [XBlock; R],
            s: [[__m256i; 2]; R],
            term: Option<usize>,
        ) -> [Self; R] {
            unsafe {
                let dw = [
                    _mm256_cvtph_ps(_mm_loadu_si128(w[..16].as_ptr().cast())),
                    _mm256_cvtph_ps(_mm_loadu_si128(w[16..32].as_ptr().cast())),
                ];
                for r in 0..R {
                    for h in 0..2 {
                        let s = match term {
                            Some(term) => _mm256_add_epi32(
                                s[r][h],
                                _mm256_set1_epi32(x[r].minus_offset[term]),
                            ),
                            None => s[r][h],
                        };
                        let d = _mm256_mul_ps(dw[h], _mm256_set1_ps(*x[r].d));
                        acc[r].0[h] =
                            _mm256_add_ps(acc[r].0[h], _mm256_mul_ps(d, _mm256_cvtepi32_ps(s)));
                    }
                }
                acc
            }
        }
    }

    impl GroupDot for Avx2Group {
        const ZERO: Self =
            Avx2Group(unsafe { std::mem::transmute::<[f32; 16], [__m256; 2]>([0.0; 16]) });

        /// Signed weights (`u - 128`), then llama.cpp's sign trick: `|w|` by
        /// `x * sign(w)`, since `u` by `x` could overflow `vpmaddubsw`'s pairs.
        #[inline(always)]
        fn q8_0<const R: usize>(
            acc: [Self; R],
            w: &[u8; Q8_0_GROUP_BYTES],
            x: [XBlock; R],
        ) -> [Self; R] {
            unsafe {
                let mut s = [[_mm256_setzero_si256(); 2]; R];
                for k in 0..8 {
                    // `h` picks the half of both the weights and the sums.
                    #[allow(clippy::needless_range_loop)]
                    for h in 0..2 {
                        let signed = _mm256_xor_si256(
                            load32(w, 32 + 64 * k + 32 * h),
                            _mm256_set1_epi8(-128),
                        );
                        let magnitude = _mm256_sign_epi8(signed, signed);
                        for r in 0..R {
                            let xs = _mm256_sign_epi8(_mm256_set1_epi32(x4(x[r].q, 4 * k)), signed);
                            s[r][h] = _mm256_add_epi32(s[r][h], Self::quads(magnitude, xs));
                        }
                    }
                }
                Self::finish(acc, w, x, s, None)
            }
        }

        #[inline(always)]
        fn q4_0<const R: usize>(
            acc: [Self; R],
            w: &[u8; Q4_0_GROUP_BYTES],
            x: [XBlock; R],
        ) -> [Self; R] {
            unsafe {
                let mut s = [[_mm256_setzero_si256(); 2]; R];
                let nibble = _mm256_set1_epi8(15);
                for k in 0..4 {
                    // `h` picks the half of both the weights and the sums.
                    #[allow(clippy::needless_range_loop)]
                    for h in 0..2 {
                        let packed = load32(w, 32 + 64 * k + 32 * h);
                        let low = _mm256_and_si256(packed, nibble);
                        let high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), nibble);
                        for r in 0..R {
                            let lo = Self::quads(low, _mm256_set1_epi32(x4(x[r].q, 4 * k)));
                            let hi = Self::quads(high, _mm256_set1_epi32(x4(x[r].q, 16 + 4 * k)));
                            s[r][h] = _mm256_add_epi32(s[r][h], _mm256_add_epi32(lo, hi));
                        }
                    }
                }
                Self::finish(acc, w, x, s, Some(Q4_0_TERM))
            }
        }

        #[inline(always)]
        fn store(self, to: &mut [f32]) {
            let mut lanes = [0.0f32; 16];
            unsafe {
                _mm256_storeu_ps(lanes.as_mut_ptr(), self.0[0]);
                _mm256_storeu_ps(lanes[8..].as_mut_ptr(), self.0[1]);
            }
            to.copy_from_slice(&lanes[..to.len()]);
        }
    }

    // The features of x86-64-v3 and x86-64-v4, as `detected` checks them.
    #[target_feature(enable = "avx,avx2,fma,bmi1,bmi2,f16c,lzcnt,movbe")]
    pub(super) unsafe fn run_avx2<K: Kernel>(kernel: K) -> K::Output {
        kernel.run::<Avx2>()
    }

    #[target_feature(enable = "avx,avx2,fma,bmi1,bmi2,f16c,lzcnt,movbe")]
    #[target_feature(enable = "avx512f,avx512bw,avx512cd,avx512dq,avx512vl")]
    pub(super) unsafe fn run_avx512<K: Kernel>(kernel: K) -> K::Output {
        kernel.run::<Avx512>()
    }

    #[derive(Clone, Copy)]
    pub(super) struct Avx2(__m256);

    #[derive(Clone, Copy)]
    pub(super) struct Avx512(__m512);

    // SAFETY (every `unsafe` below): an `Avx2` or `Avx512` value exists only
    // inside `run_avx2` / `run_avx512` (the types are private to this module
    // and `ZERO` is plain bits), which run only on CPUs with those features;
    // loads and stores go through arrays of exactly `LANES` floats.
    impl Vector for Avx2 {
        const LANES: usize = 8;
        array_chunks!(8);
        const ZERO: Self = Avx2(unsafe { std::mem::transmute::<[f32; 8], __m256>([0.0; 8]) });

        #[inline(always)]
        fn splat(v: f32) -> Self {
            Avx2(unsafe { _mm256_set1_ps(v) })
        }

        #[inline(always)]
        fn load(from: &[f32; 8]) -> Self {
            Avx2(unsafe { _mm256_loadu_ps(from.as_ptr()) })
        }

        #[inline(always)]
        fn store(self, to: &mut [f32; 8]) {
            unsafe { _mm256_storeu_ps(to.as_mut_ptr(), self.0) }
        }

        #[inline(always)]
        fn mul_add(self, a: Self, b: Self) -> Self {
            Avx2(unsafe { _mm256_fmadd_ps(a.0, b.0, self.0) })
        }

        /// The trait's halving order (`l += l + 4`, `+ 2`, `+ 1`) in registers.
        #[inline(always)]
        fn sum(self) -> f32 {
            unsafe {
                halve_128(
                    _mm256_castps256_ps128(self.0),
                    _mm256_extractf128_ps(self.0, 1),
                )
            }
        }
    }

    /// `lo + hi` (lanes `l` and `l + 4` of 8), then `l += l + 2` and
    /// `l += l + 1`: the last three halvings of [`Vector::sum`], so the bits
    /// are the portable code's.
    #[inline(always)]
    unsafe fn halve_128(lo: __m128, hi: __m128) -> f32 {
        unsafe {
            let four = _mm_add_ps(lo, hi);
            let two = _mm_add_ps(four, _mm_movehl_ps(four, four));
            let one = _mm_add_ss(two, _mm_shuffle_ps(two, two, 1));
            _mm_cvtss_f32(one)
        }
    }

    impl Vector for Avx512 {
        const LANES: usize = 16;
        array_chunks!(16);
        const ZERO: Self = Avx512(unsafe { std::mem::transmute::<[f32; 16], __m512>([0.0; 16]) });

        #[inline(always)]
        fn splat(v: f32) -> Self {
            Avx512(unsafe { _mm512_set1_ps(v) })
        }

        #[inline(always)]
        fn load(from: &[f32; 16]) -> Self {
            Avx512(unsafe { _mm512_loadu_ps(from.as_ptr()) })
        }

        #[inline(always)]
        fn store(self, to: &mut [f32; 16]) {
            unsafe { _mm512_storeu_ps(to.as_mut_ptr(), self.0) }
        }

        #[inline(always)]
        fn mul_add(self, a: Self, b: Self) -> Self {
            Avx512(unsafe { _mm512_fmadd_ps(a.0, b.0, self.0) })
        }

        /// The trait's halving order (`l += l + 8`, then as `Avx2`) in registers.
        #[inline(always)]
        fn sum(self) -> f32 {
            unsafe {
                let eight = _mm256_add_ps(
                    _mm512_castps512_ps256(self.0),
                    _mm512_extractf32x8_ps(self.0, 1),
                );
                halve_128(
                    _mm256_castps256_ps128(eight),
                    _mm256_extractf128_ps(eight, 1),
                )
            }
        }
    }

    #[target_feature(enable = "avx,avx2,fma,bmi1,bmi2,f16c,lzcnt,movbe")]
    #[target_feature(enable = "avx512f,avx512bw,avx512cd,avx512dq,avx512vl,avx512bf16")]
    pub(super) unsafe fn run_avx512_bf16<K: PairKernel>(kernel: K) -> K::Output {
        kernel.run::<Avx512Bf16>()
    }

    #[derive(Clone, Copy)]
    pub(super) struct Avx512Bf16(__m512);

    // SAFETY: as for `Avx512`; an `Avx512Bf16` exists only inside
    // `run_avx512_bf16`, which runs only on CPUs with AVX512_BF16.
    impl PairDot for Avx512Bf16 {
        type Pairs = __m512bh;
        const ZERO: Self =
            Avx512Bf16(unsafe { std::mem::transmute::<[f32; 16], __m512>([0.0; 16]) });

        #[inline(always)]
        fn load_pairs(from: &[u32; 16]) -> __m512bh {
            unsafe { std::mem::transmute(_mm512_loadu_si512(from.as_ptr().cast())) }
        }

        #[inline(always)]
        fn splat_pair(pair: u32) -> __m512bh {
            unsafe { std::mem::transmute(_mm512_set1_epi32(pair as i32)) }
        }

        #[inline(always)]
        fn dot(self, a: __m512bh, b: __m512bh) -> Self {
            Avx512Bf16(unsafe { _mm512_dpbf16_ps(self.0, a, b) })
        }

        #[inline(always)]
        fn store(self, to: &mut [f32; 16]) {
            unsafe { _mm512_storeu_ps(to.as_mut_ptr(), self.0) }
        }
    }
}

/// Ask the CPU to start loading the cache line that holds `data[at]` into
/// every level of cache (a hint: nothing happens past the end of `data`, or
/// on other CPUs). For access patterns the hardware prefetchers do not
/// follow on their own.
#[inline(always)]
pub fn prefetch<T>(data: &[T], at: usize) {
    prefetch_into::<T, { CacheLevel::L1 as i32 }>(data, at)
}

/// As [`prefetch`], into the level-2 cache and not level 1: for lines
/// asked for well ahead, which would otherwise push lines still in use out
/// of the small level-1 cache.
#[inline(always)]
pub fn prefetch_l2<T>(data: &[T], at: usize) {
    prefetch_into::<T, { CacheLevel::L2 as i32 }>(data, at)
}

/// x86's prefetch hints: `T0` (every level) and `T1` (level 2 and beyond).
enum CacheLevel {
    L1 = 3,
    L2 = 2,
}

#[inline(always)]
fn prefetch_into<T, const HINT: i32>(data: &[T], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if at < data.len() {
        // SAFETY: SSE is part of every x86-64 CPU; a prefetch never faults
        // and reads nothing into the program; the pointer is inside `data`.
        unsafe { std::arch::x86_64::_mm_prefetch::<HINT>(data.as_ptr().add(at).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, at);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lane-by-lane operations and the fixed-order sum of one vector type.
    struct LaneCheck;

    impl Kernel for LaneCheck {
        type Output = ();
        #[inline(always)]
        fn run<V: Vector>(self) {
            let a: Vec<f32> = (0..V::LANES + 3).map(|l| l as f32).collect();
            let b: Vec<f32> = (0..V::LANES).map(|l| 2.0 - l as f32).collect();
            let (a, b) = (&V::chunks(&a)[0], &V::chunks(&b)[0]);
            let mut out = V::Array::default();
            V::splat(1.0)
                .mul_add(V::load(a), V::load(b))
                .store(&mut out);
            for l in 0..V::LANES {
                assert_eq!(out.as_ref()[l], 1.0 + a.as_ref()[l] * b.as_ref()[l]);
            }
            V::ZERO.store(&mut out);
            assert!(out.as_ref().iter().all(|&v| v == 0.0));
            let want: f32 = a.as_ref().iter().sum();
            assert_eq!(V::load(a).sum(), want);
            // Values whose sum rounds differently in another order: the
            // halving order, bit for bit.
            let mut c = V::Array::default();
            for (l, v) in c.as_mut().iter_mut().enumerate() {
                *v = [1e8, 1.0, -1e8, 0.3, 7e-3, -2.5e7, 3.1, 1e-4][l % 8] * (1.0 + l as f32);
            }
            let mut lanes = c;
            let lanes = lanes.as_mut();
            let mut width = V::LANES;
            while width > 1 {
                width /= 2;
                for l in 0..width {
                    lanes[l] += lanes[l + width];
                }
            }
            assert_eq!(V::load(&c).sum().to_bits(), lanes[0].to_bits());
            assert_eq!(V::chunks(&[0.0; 40]).len(), 40 / V::LANES);
        }
    }

    #[test]
    fn operations_act_lane_by_lane_at_this_level() {
        dispatch(LaneCheck);
        LaneCheck.run::<Portable>();
    }

    #[test]
    fn level_names_round_trip_and_unknown_ones_are_refused() {
        for level in Level::ALL {
            assert_eq!(Level::parse(level.name()).unwrap(), level);
        }
        assert_eq!(Level::parse(" AVX2 ").unwrap(), Level::Avx2);
        let err = Level::parse("sse9").unwrap_err().to_string();
        assert!(err.contains("sse9") && err.contains("avx512"), "{err}");
        assert!(Level::Portable.available());
        assert!(level().available());
    }
}
