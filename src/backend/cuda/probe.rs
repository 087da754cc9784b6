//! Finding the CUDA libraries before anything calls into them.
//!
//! `cudarc` loads each library lazily by name and panics when none of its
//! candidate names can be opened. So the CUDA backend looks for every library
//! itself first, opens it by its full path (the dynamic loader then hands the
//! same object to `cudarc`, which asks for it by its `soname`), and turns a
//! library that is not there into an [`Error::Cuda`] naming it, the places
//! searched and the environment variable that points to it.
//!
//! Where each library is looked for, in order:
//! 1. its own variable (`LMFORGE_LIBCUDA`, `LMFORGE_LIBNVRTC`,
//!    `LMFORGE_LIBCUBLASLT`): a file, or a folder holding it. When set, it is
//!    the only place looked at, so a wrong value is an error, not a fallback;
//! 2. the toolkit named by `CUDA_HOME` or `CUDA_PATH`, then the one in
//!    `/usr/local/cuda` (`lib64/`, `lib/`, `targets/x86_64-linux/lib/`);
//! 3. the `lib/` folders of NVIDIA's Python wheels (`site-packages/nvidia/*/lib`)
//!    in the active virtual environment or conda environment, the user's and the
//!    system's Python folders, and `PYTHONPATH`;
//! 4. `LD_LIBRARY_PATH`, then the loader's cache as `ldconfig -p` prints it.
//!
//! The driver (`libcuda`) is installed with the NVIDIA kernel driver and is
//! never in a wheel or a toolkit folder, so it is looked for in 1 and 4 only.

use crate::error::{Error, Result};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One library the CUDA backend needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Library {
    /// What it is, for messages.
    pub role: &'static str,
    /// The file names accepted, the `soname` first.
    pub files: &'static [&'static str],
    /// The variable that points to it.
    pub env: &'static str,
    /// Whether toolkits and Python wheels ship it.
    pub in_toolkit: bool,
    /// The start of the name of a library beside it that it opens by name
    /// itself (NVRTC's built-in headers, `libnvrtc-builtins.so.13.0`): opened
    /// first from the same folder, so it is found without `LD_LIBRARY_PATH`.
    pub companion: Option<&'static str>,
}

/// The NVIDIA driver's user-space library.
pub const DRIVER: Library = Library {
    role: "the NVIDIA driver library",
    files: &["libcuda.so.1", "libcuda.so"],
    env: "LMFORGE_LIBCUDA",
    in_toolkit: false,
    companion: None,
};

/// The run-time compiler the kernels are built with: CUDA 13's, else 12's
/// (the few calls made of it are the same in both).
pub const NVRTC: Library = Library {
    role: "NVRTC, CUDA's run-time compiler",
    files: &["libnvrtc.so.13", "libnvrtc.so.12"],
    env: "LMFORGE_LIBNVRTC",
    in_toolkit: true,
    companion: Some("libnvrtc-builtins.so."),
};

/// The matrix products: CUDA 13's cuBLASLt, else 12's.
pub const CUBLASLT: Library = Library {
    role: "cuBLASLt, CUDA's matrix-product library",
    files: &["libcublasLt.so.13", "libcublasLt.so.12"],
    env: "LMFORGE_LIBCUBLASLT",
    in_toolkit: true,
    companion: None,
};

/// Every library the backend opens, in the order they are opened.
pub const ALL: [Library; 3] = [DRIVER, NVRTC, CUBLASLT];

/// Where a library was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub library: Library,
    pub path: PathBuf,
    /// Which of the places searched held it (`CUDA_HOME`, `python wheel`...).
    pub source: String,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.source)
    }
}

/// The places to search, gathered once from the environment (and, in tests,
/// made up).
#[derive(Clone, Debug, Default)]
pub struct SearchPlaces {
    /// `(variable, value)` of the per-library variables that are set.
    pub overrides: Vec<(String, PathBuf)>,
    /// Toolkit roots (`CUDA_HOME`, `CUDA_PATH`), with the variable's name.
    pub toolkits: Vec<(String, PathBuf)>,
    /// Python `site-packages` folders.
    pub site_packages: Vec<PathBuf>,
    /// `LD_LIBRARY_PATH` entries.
    pub ld_library_path: Vec<PathBuf>,
    /// What `ldconfig -p` printed (empty when it could not run).
    pub ldconfig: String,
}

impl SearchPlaces {
    /// The places this process's environment names.
    pub fn from_environment() -> SearchPlaces {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let overrides = ALL
            .iter()
            .filter_map(|lib| var(lib.env).map(|v| (lib.env.to_string(), PathBuf::from(v))))
            .collect();
        let mut toolkits: Vec<(String, PathBuf)> = ["CUDA_HOME", "CUDA_PATH"]
            .iter()
            .filter_map(|name| var(name).map(|v| (name.to_string(), PathBuf::from(v))))
            .collect();
        toolkits.push(("/usr/local/cuda".into(), PathBuf::from("/usr/local/cuda")));
        let split = |name: &str| -> Vec<PathBuf> {
            var(name)
                .map(|v| std::env::split_paths(&v).collect())
                .unwrap_or_default()
        };
        SearchPlaces {
            overrides,
            toolkits,
            site_packages: python_site_folders(&split("PYTHONPATH")),
            ld_library_path: split("LD_LIBRARY_PATH"),
            ldconfig: ldconfig_listing(),
        }
    }

    /// Find `library`, or say where it was looked for and how to point to it.
    pub fn locate(&self, library: Library) -> Result<Found> {
        if let Some((name, value)) = self.overrides.iter().find(|(n, _)| n == library.env) {
            return locate_override(library, name, value);
        }
        let mut searched = Vec::new();
        for (dir, source) in self.folders(library) {
            for file in library.files {
                let path = dir.join(file);
                if path.is_file() {
                    return Ok(Found {
                        library,
                        path,
                        source,
                    });
                }
            }
            searched.push(dir.display().to_string());
        }
        if let Some(path) = ldconfig_entry(&self.ldconfig, library.files) {
            return Ok(Found {
                library,
                path,
                source: "ldconfig".into(),
            });
        }
        searched.push("the loader cache (ldconfig -p)".into());
        Err(missing(library, &searched))
    }

    /// The folders to look in for `library`, each with where it came from.
    fn folders(&self, library: Library) -> Vec<(PathBuf, String)> {
        let mut folders = Vec::new();
        if library.in_toolkit {
            for (name, root) in &self.toolkits {
                for sub in ["lib64", "lib", "targets/x86_64-linux/lib"] {
                    folders.push((root.join(sub), name.clone()));
                }
            }
            for site in &self.site_packages {
                for lib in wheel_lib_folders(site) {
                    folders.push((lib, "python wheel".to_string()));
                }
            }
        }
        for dir in &self.ld_library_path {
            folders.push((dir.clone(), "LD_LIBRARY_PATH".to_string()));
        }
        folders
    }
}

/// A per-library variable: a file, or a folder holding one of its names.
fn locate_override(library: Library, name: &str, value: &Path) -> Result<Found> {
    let source = name.to_string();
    if value.is_file() {
        return Ok(Found {
            library,
            path: value.to_path_buf(),
            source,
        });
    }
    let in_folder = library
        .files
        .iter()
        .map(|f| value.join(f))
        .find(|p| p.is_file());
    if let (true, Some(path)) = (value.is_dir(), in_folder) {
        return Ok(Found {
            library,
            path,
            source,
        });
    }
    Err(Error::Cuda(format!(
        "{} not found: {name}={} is neither that file nor a folder holding {}",
        library.role,
        value.display(),
        library.files.join(" or ")
    )))
}

fn missing(library: Library, searched: &[String]) -> Error {
    let hint = if library.in_toolkit {
        format!(
            "install the CUDA toolkit (13 or 12) and set CUDA_HOME, or `pip install nvidia-{}` \
             in the active Python environment, or set {}=/path/to/{}",
            wheel_name(library),
            library.env,
            library.files[0]
        )
    } else {
        format!(
            "install the NVIDIA driver (580 or newer), or set {}=/path/to/{}",
            library.env, library.files[0]
        )
    };
    Error::Cuda(format!(
        "{} ({}) not found; looked in {}; {hint}",
        library.role,
        library.files.join(" or "),
        searched.join(", "),
    ))
}

/// The PyPI package that ships `library`.
fn wheel_name(library: Library) -> &'static str {
    if library == NVRTC {
        "cuda-nvrtc"
    } else {
        "cublas"
    }
}

/// `site/nvidia/*/lib` (CUDA 12 wheels) and `site/nvidia/*/*/lib`
/// (CUDA 13 wheels put theirs under `nvidia/cu13/`), sorted so the search
/// order does not depend on the file system's.
fn wheel_lib_folders(site: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(packages) = std::fs::read_dir(site.join("nvidia")) else {
        return found;
    };
    for package in packages.flatten() {
        let dir = package.path();
        found.push(dir.join("lib"));
        if let Ok(inner) = std::fs::read_dir(&dir) {
            found.extend(inner.flatten().map(|e| e.path().join("lib")));
        }
    }
    found.retain(|d| d.is_dir());
    found.sort();
    found
}

/// The Python package folders worth looking in: `PYTHONPATH`, the virtual
/// or conda environment, the user's, then the system's.
fn python_site_folders(pythonpath: &[PathBuf]) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = ["VIRTUAL_ENV", "CONDA_PREFIX"]
        .iter()
        .filter_map(|v| std::env::var_os(v).map(|p| PathBuf::from(p).join("lib")))
        .collect();
    if let Some(home) = std::env::var_os("HOME") {
        roots.push(PathBuf::from(home).join(".local/lib"));
    }
    roots.extend(["/usr/local/lib", "/usr/lib"].map(PathBuf::from));
    let mut sites = pythonpath.to_vec();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        let mut pythons: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("python3"))
            })
            .collect();
        pythons.sort();
        for python in pythons {
            sites.push(python.join("site-packages"));
            sites.push(python.join("dist-packages"));
        }
    }
    sites.retain(|s| s.is_dir());
    sites
}

/// What `ldconfig -p` prints, or nothing when it cannot run.
fn ldconfig_listing() -> String {
    ["ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"]
        .iter()
        .find_map(|cmd| std::process::Command::new(cmd).arg("-p").output().ok())
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

/// The path `ldconfig -p` gives for the first of `files` it lists, from
/// lines like `\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1`.
fn ldconfig_entry(listing: &str, files: &[&str]) -> Option<PathBuf> {
    files.iter().find_map(|file| {
        listing.lines().find_map(|line| {
            let (name, rest) = line.trim().split_once(' ')?;
            let (_, path) = rest.split_once("=> ")?;
            (name == *file && rest.contains("x86-64")).then(|| PathBuf::from(path.trim()))
        })
    })
}

/// The libraries, found and opened. Kept open for the life of the process,
/// so `cudarc`'s later opening by name finds them.
static OPENED: OnceLock<std::result::Result<Vec<Found>, String>> = OnceLock::new();

/// Find and open every library in [`ALL`] (once per process); returns where
/// each was found. An error names the first one missing or unloadable.
pub fn open_libraries() -> Result<&'static [Found]> {
    OPENED
        .get_or_init(|| {
            open_all(&SearchPlaces::from_environment()).map_err(|e| match e {
                Error::Cuda(message) => message,
                other => other.to_string(),
            })
        })
        .as_deref()
        .map_err(|e| Error::Cuda(e.clone()))
}

/// Locate and open each of [`ALL`] from `places`.
pub fn open_all(places: &SearchPlaces) -> Result<Vec<Found>> {
    let mut found = Vec::new();
    for library in ALL {
        let lib = places.locate(library)?;
        open(&lib)?;
        found.push(lib);
    }
    Ok(found)
}

/// Open the library at `found.path` (after its companion, if it has one)
/// and keep it loaded for good.
pub fn open(found: &Found) -> Result<()> {
    if let Some(companion) = companion_path(found) {
        load(found, &companion)?;
    }
    load(found, &found.path)
}

/// The companion library of `found` in its folder, when there is one.
fn companion_path(found: &Found) -> Option<PathBuf> {
    // The companion of the same major version: `libnvrtc.so.13` opens
    // `libnvrtc-builtins.so.13.*`.
    let name = found.path.file_name()?.to_string_lossy().into_owned();
    let major = name.rsplit_once(".so.").map_or("", |(_, v)| v);
    let prefix = format!("{}{major}.", found.library.companion?);
    let dir = found.path.parent()?;
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect();
    names.sort();
    names.pop()
}

fn load(found: &Found, path: &Path) -> Result<()> {
    // SAFETY: opening a shared library runs its initialisers; NVIDIA's
    // libraries have no initialisers with preconditions on the caller.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| {
        Error::Cuda(format!(
            "{} was found at {found} but {} could not be loaded: {e}; \
             set {} to a working copy",
            found.library.role,
            path.display(),
            found.library.env
        ))
    })?;
    // Never unloaded: `cudarc` holds function pointers into it from now on.
    std::mem::forget(lib);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"not a library").unwrap();
    }

    #[test]
    fn wheels_toolkit_and_ldconfig_are_searched_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("site-packages");
        let wheel = site.join("nvidia/cu13/lib/libnvrtc.so.13");
        touch(&wheel);
        let mut places = SearchPlaces {
            site_packages: vec![site.clone()],
            ..Default::default()
        };
        let found = places.locate(NVRTC).unwrap();
        assert_eq!(
            (found.path.as_path(), found.source.as_str()),
            (wheel.as_path(), "python wheel")
        );

        let toolkit = dir.path().join("cuda-13.0");
        let in_toolkit = toolkit.join("lib64/libnvrtc.so.13");
        touch(&in_toolkit);
        places.toolkits.push(("CUDA_HOME".into(), toolkit));
        let found = places.locate(NVRTC).unwrap();
        assert_eq!(
            (found.path, found.source),
            (in_toolkit, "CUDA_HOME".to_string())
        );

        places.ldconfig =
            "\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1\n\
                           \tlibcuda.so.1 (libc6) => /usr/lib/i386-linux-gnu/libcuda.so.1\n"
                .into();
        let found = places.locate(DRIVER).unwrap();
        assert_eq!(
            found.path,
            PathBuf::from("/usr/lib/x86_64-linux-gnu/libcuda.so.1")
        );
        assert_eq!(found.source, "ldconfig");
    }

    #[test]
    fn cuda12_wheel_layout_is_found_but_the_driver_never_in_wheels() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().to_path_buf();
        let lt = site.join("nvidia/cublas/lib/libcublasLt.so.13");
        touch(&lt);
        touch(&site.join("nvidia/cuda_runtime/lib/libcuda.so.1"));
        let places = SearchPlaces {
            site_packages: vec![site],
            ..Default::default()
        };
        assert_eq!(places.locate(CUBLASLT).unwrap().path, lt);
        let err = places.locate(DRIVER).unwrap_err().to_string();
        assert!(
            err.contains("libcuda.so.1") && err.contains("LMFORGE_LIBCUDA"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_library_names_itself_the_places_and_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let places = SearchPlaces {
            toolkits: vec![("CUDA_PATH".into(), dir.path().to_path_buf())],
            ld_library_path: vec![dir.path().join("ld")],
            ..Default::default()
        };
        let err = places.locate(CUBLASLT).unwrap_err().to_string();
        for needle in [
            "libcublasLt.so.13",
            "LMFORGE_LIBCUBLASLT",
            "nvidia-cublas",
            "lib64",
            "ldconfig",
            "/ld",
        ] {
            assert!(err.contains(needle), "{needle:?} missing from: {err}");
        }
    }

    #[test]
    fn an_override_is_the_only_place_looked_at() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mine/libnvrtc.so.13");
        touch(&file);
        let elsewhere = dir.path().join("toolkit");
        touch(&elsewhere.join("lib64/libnvrtc.so.13"));
        let mut places = SearchPlaces {
            overrides: vec![("LMFORGE_LIBNVRTC".into(), dir.path().join("mine"))],
            toolkits: vec![("CUDA_HOME".into(), elsewhere)],
            ..Default::default()
        };
        assert_eq!(places.locate(NVRTC).unwrap().path, file);
        places.overrides[0].1 = dir.path().join("nowhere");
        let err = places.locate(NVRTC).unwrap_err().to_string();
        assert!(
            err.contains("LMFORGE_LIBNVRTC=") && err.contains("nowhere"),
            "{err}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_library_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("libcuda.so.1");
        touch(&fake);
        let places = SearchPlaces {
            overrides: vec![("LMFORGE_LIBCUDA".into(), fake)],
            ..Default::default()
        };
        let err = open_all(&places).unwrap_err().to_string();
        assert!(
            err.contains("could not be loaded") && err.contains("LMFORGE_LIBCUDA"),
            "{err}"
        );
    }
}
