//! Small file-system helpers shared by every writer: atomic writes, and the
//! clean-up of temporaries a crash or a failed write leaves.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary name a file is written under before it is renamed into place.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

/// Write a file atomically: the bytes go to a temporary file beside `path`, which
/// is flushed to disk and then renamed over `path`. A crash or a full disk leaves
/// either the old file or the new one, never half of one.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = std::io::BufWriter::new(File::create(&tmp)?);
        write(&mut file)?;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(source) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, source));
    }
    // Persist the rename itself; not every platform can open a directory.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// [`write_atomic`] for bytes already in memory.
pub fn write_atomic_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| w.write_all(bytes))
}

/// Whether a process with this id still runs. Where that cannot be told
/// (no `/proc`), every process counts as gone.
pub(crate) fn process_alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
}

/// The process id in a temporary name written by [`write_atomic`]
/// (`NAME.tmp.PID`) for one of the files `names`, if `name` is one.
fn temp_owner(name: &str, names: &[&str]) -> Option<u32> {
    let (base, pid) = name.rsplit_once(".tmp.")?;
    if !names.contains(&base) {
        return None;
    }
    pid.parse().ok()
}

/// Delete the temporary files that [`write_atomic`] left in `dir` for the
/// files `names` when its process was killed (`kill -9`, power loss) before
/// it could rename or remove them; those of a process still running, and
/// any other file, are left alone. Returns the names removed. A
/// checkpoint's temporary is as big as the checkpoint, so leaving them
/// would fill the disk one crash at a time.
pub fn remove_stale_temps(dir: &Path, names: &[&str]) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if temp_owner(&name, names).is_some_and(|pid| !process_alive(pid)) && path.is_file() {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            removed.push(name.into_owned());
        }
    }
    Ok(removed)
}

/// A file that is deleted when this guard is dropped, unless [`keep`] is
/// called first: a writer that fails half-way (a full disk) or is dropped
/// early leaves no temporary behind.
///
/// [`keep`]: TempGuard::keep
#[derive(Debug)]
pub struct TempGuard {
    path: Option<PathBuf>,
}

impl TempGuard {
    pub fn new(path: PathBuf) -> Self {
        TempGuard { path: Some(path) }
    }

    /// The file has been renamed into place (or is wanted): do not delete it.
    pub fn keep(mut self) {
        self.path = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temporaries_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let ours = format!("model.safetensors.tmp.{}", std::process::id());
        // A pid above the kernel's maximum (4194304) never runs.
        let dead = "train_state.safetensors.tmp.999999999";
        let other = "notes.txt.tmp.999999999";
        for name in [
            ours.as_str(),
            dead,
            other,
            "notes.tmp.txt",
            "model.safetensors",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let names = ["model.safetensors", "train_state.safetensors"];
        let removed = remove_stale_temps(dir.path(), &names).unwrap();
        assert_eq!(removed, vec![dead.to_string()]);
        assert!(
            dir.path().join(&ours).exists(),
            "a live writer's file stays"
        );
        assert!(dir.path().join(other).exists(), "not one of ours");
        assert!(dir.path().join("notes.tmp.txt").exists());
        assert!(dir.path().join("model.safetensors").exists());
        let missing = dir.path().join("missing");
        assert!(remove_stale_temps(&missing, &names).unwrap().is_empty());
    }

    #[test]
    fn temp_guard_deletes_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.tmp"), dir.path().join("b.tmp"));
        std::fs::write(&a, b"x").unwrap();
        std::fs::write(&b, b"x").unwrap();
        drop(TempGuard::new(a.clone()));
        TempGuard::new(b.clone()).keep();
        assert!(!a.exists());
        assert!(b.exists());
    }
}
