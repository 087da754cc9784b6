//! The kernels' CUDA C source, compiled with NVRTC when the backend starts.
//!
//! The sources sit beside this file (`kernels/*.cu`, one per layer, each
//! naming the CPU kernel whose math it computes) and are joined into one
//! program. They include no headers: NVRTC 13 ships none.
//!
//! At run time the program is compiled for the GPU's own architecture
//! (`-arch=sm_XY`) straight to machine code (a cubin), not to PTX: PTX from
//! an NVRTC newer than the driver fails to load
//! (`CUDA_ERROR_UNSUPPORTED_PTX_VERSION`), machine code does not. The cubin
//! is cached on disk, named by a hash of the source, the compiler's version
//! and the architecture, so a second start skips the compile.
//!
//! [`compile`] with [`Target::Ptx`] is what the compile-check test uses on
//! machines with no GPU (NVRTC from a Python wheel, then `ptxas`).

use crate::error::{Error, Result};
use cudarc::nvrtc::{result as nvrtc, sys as nvrtc_sys};
use sha2::{Digest, Sha256};
use std::ffi::CString;
use std::path::{Path, PathBuf};

/// Every kernel source, in the order they are joined (helpers first).
const SOURCES: [(&str, &str); 10] = [
    ("common.cu", include_str!("kernels/common.cu")),
    ("elementwise.cu", include_str!("kernels/elementwise.cu")),
    ("activation.cu", include_str!("kernels/activation.cu")),
    ("embedding.cu", include_str!("kernels/embedding.cu")),
    ("layernorm.cu", include_str!("kernels/layernorm.cu")),
    ("rmsnorm.cu", include_str!("kernels/rmsnorm.cu")),
    ("rope.cu", include_str!("kernels/rope.cu")),
    ("loss.cu", include_str!("kernels/loss.cu")),
    ("adamw.cu", include_str!("kernels/adamw.cu")),
    ("attention.cu", include_str!("kernels/attention.cu")),
];

/// The entry points the backend loads; each must be in the compiled program.
pub const KERNELS: [&str; 28] = [
    "lmf_fill",
    "lmf_scale",
    "lmf_add",
    "lmf_dropout",
    "lmf_residual",
    "lmf_copy_columns",
    "lmf_act_forward",
    "lmf_act_backward",
    "lmf_swiglu_forward",
    "lmf_swiglu_backward",
    "lmf_embedding_forward",
    "lmf_embedding_backward_wte",
    "lmf_embedding_backward_wpe",
    "lmf_layernorm_forward",
    "lmf_layernorm_backward_input",
    "lmf_layernorm_backward_params",
    "lmf_bias_backward",
    "lmf_rmsnorm_forward",
    "lmf_rmsnorm_backward_input",
    "lmf_rmsnorm_backward_weight",
    "lmf_rope",
    "lmf_cross_entropy",
    "lmf_loss_sum",
    "lmf_sum_of_squares",
    "lmf_adamw",
    "lmf_attention_forward",
    "lmf_attention_backward_q",
    "lmf_attention_backward_kv",
];

/// The one program: every source, each preceded by a `#line` so NVRTC's
/// messages name the file and line.
pub fn program_source() -> String {
    let mut src = String::new();
    for (name, text) in SOURCES {
        src.push_str(&format!("#line 1 \"{name}\"\n{text}\n"));
    }
    src
}

/// What to compile to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Machine code for `sm_{0}` (at run time).
    Cubin(u32),
    /// PTX for the virtual architecture `compute_{0}` (for the compile check).
    Ptx(u32),
}

impl Target {
    fn option(self) -> String {
        match self {
            Target::Cubin(arch) => format!("--gpu-architecture=sm_{arch}"),
            Target::Ptx(arch) => format!("--gpu-architecture=compute_{arch}"),
        }
    }
}

/// Compile [`program_source`] with NVRTC (which must already be loadable:
/// see [`super::probe`]). Returns the cubin or the PTX text's bytes.
pub fn compile(target: Target) -> Result<Vec<u8>> {
    let src = CString::new(program_source()).expect("kernel sources hold no NUL byte");
    let name = CString::new("lmforge_kernels.cu").expect("no NUL");
    let prog = nvrtc::create_program(&src, Some(&name)).map_err(|e| nvrtc_error("create", e))?;
    let options = [target.option(), "--std=c++17".to_string()];
    // SAFETY: `prog` was just created and is destroyed only below.
    let compiled = unsafe { nvrtc::compile_program(prog, &options) };
    let out = match compiled {
        Err(e) => Err(Error::Cuda(format!(
            "NVRTC could not compile the kernels ({e:?}):\n{}",
            program_log(prog)
        ))),
        Ok(()) => match target {
            Target::Ptx(_) => {
                // SAFETY: `prog` compiled successfully.
                unsafe { nvrtc::get_ptx(prog) }
                    .map(|text| {
                        text.iter()
                            .take_while(|&&b| b != 0)
                            .map(|&b| b as u8)
                            .collect()
                    })
                    .map_err(|e| nvrtc_error("get the PTX of", e))
            }
            // SAFETY: `prog` compiled successfully.
            Target::Cubin(_) => unsafe { cubin(prog) },
        },
    };
    // SAFETY: `prog` is not used after this.
    let _ = unsafe { nvrtc::destroy_program(prog) };
    out
}

fn nvrtc_error(what: &str, e: nvrtc::NvrtcError) -> Error {
    Error::Cuda(format!("NVRTC could not {what} the kernel program: {e:?}"))
}

/// NVRTC's messages for `prog`.
fn program_log(prog: nvrtc_sys::nvrtcProgram) -> String {
    // SAFETY: `prog` is a live program.
    match unsafe { nvrtc::get_program_log(prog) } {
        Ok(log) => {
            let bytes: Vec<u8> = log
                .iter()
                .take_while(|&&b| b != 0)
                .map(|&b| b as u8)
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Err(e) => format!("(no log: {e:?})"),
    }
}

/// The machine code of a compiled program.
///
/// # Safety
/// `prog` must be a live program compiled for a real architecture.
unsafe fn cubin(prog: nvrtc_sys::nvrtcProgram) -> Result<Vec<u8>> {
    let mut size = 0usize;
    // SAFETY: per the caller; `size` is a valid out pointer.
    unsafe { nvrtc_sys::nvrtcGetCUBINSize(prog, &mut size) }
        .result()
        .map_err(|e| nvrtc_error("size the machine code of", e))?;
    let mut bytes = vec![0u8; size];
    // SAFETY: `bytes` holds the `size` bytes NVRTC asked for.
    unsafe { nvrtc_sys::nvrtcGetCUBIN(prog, bytes.as_mut_ptr().cast()) }
        .result()
        .map_err(|e| nvrtc_error("get the machine code of", e))?;
    Ok(bytes)
}

/// NVRTC's version, `(major, minor)`.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two valid out pointers.
    unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| nvrtc_error("report the version of", e))?;
    Ok((major, minor))
}

/// The folder cubins are cached in: `LMFORGE_CUDA_CACHE`, else
/// `$XDG_CACHE_HOME/lmforge/cuda`, else `~/.cache/lmforge/cuda`.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("LMFORGE_CUDA_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("lmforge/cuda")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/lmforge/cuda")))
}

/// The cache file for `arch`: the hash covers the source, NVRTC's version
/// and the architecture, so any change to one of them compiles afresh.
pub fn cache_file(dir: &Path, arch: u32, nvrtc: (i32, i32)) -> PathBuf {
    let mut hash = Sha256::new();
    hash.update(program_source().as_bytes());
    hash.update(format!("nvrtc {}.{} sm_{arch}", nvrtc.0, nvrtc.1).as_bytes());
    let digest = hash.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("kernels-{hex}-sm_{arch}.cubin"))
}

/// The cubin for `arch`, from the cache or compiled now (and then cached; a
/// cache that cannot be written only costs the next start a compile).
/// Returns it and whether it came from the cache.
pub fn cubin_for(arch: u32) -> Result<(Vec<u8>, bool)> {
    let version = nvrtc_version()?;
    let file = cache_dir().map(|dir| cache_file(&dir, arch, version));
    if let Some(bytes) = file.as_ref().and_then(|f| std::fs::read(f).ok())
        && !bytes.is_empty()
    {
        return Ok((bytes, true));
    }
    let bytes = compile(Target::Cubin(arch))?;
    if let Some(file) = file {
        let written = file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .map_err(|e| Error::io(&file, e))
            .and_then(|()| crate::fsutil::write_atomic_bytes(&file, &bytes));
        if let Err(e) = written {
            eprintln!("warning: could not cache the compiled CUDA kernels: {e}");
        }
    }
    Ok((bytes, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_kernel_is_defined_once_and_every_defined_one_listed() {
        let src = program_source();
        let defined: Vec<&str> = src
            .split("extern \"C\" __global__ void ")
            .skip(1)
            .map(|rest| rest.split('(').next().unwrap())
            .collect();
        let mut listed = KERNELS.to_vec();
        let mut sorted = defined.clone();
        listed.sort();
        sorted.sort();
        assert_eq!(sorted, listed);
        assert!(
            !src.contains("#include"),
            "NVRTC 13 has no headers to include"
        );
    }

    #[test]
    fn the_cache_name_changes_with_the_architecture_and_the_compiler() {
        let dir = Path::new("/cache");
        let a = cache_file(dir, 90, (13, 0));
        assert_ne!(a, cache_file(dir, 80, (13, 0)));
        assert_ne!(a, cache_file(dir, 90, (13, 1)));
        assert_eq!(a, cache_file(dir, 90, (13, 0)));
        assert!(a.to_string_lossy().ends_with("-sm_90.cubin"));
    }
}
