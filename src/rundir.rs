//! Output folders that are never written by two processes at once, and never
//! replaced by a command that did not make them.
//!
//! - [`RunLock`]: one writer per folder. An exclusive advisory lock (`flock`)
//!   on `DIR/.lmforge.lock`, held for as long as the value lives. The kernel
//!   drops it when the process ends, however it ends (`kill -9` included), so
//!   a lock is never stale. The file names its holder (process id, command,
//!   start time) for the message a second writer gets. Taking the lock is the
//!   start of every writing command, so it also removes what killed writers
//!   left in the folder ([`remove_stale`]). Readers (`sample`, `serve`,
//!   `plot`, exports reading a run) take no lock and are never held up.
//! - [`write_new_output`]: a folder a command writes as a whole (`export-hf`,
//!   `import-hf`, `merge-lora`). It is written into a staging folder inside
//!   `DIR` and moved into place only once complete; a folder that already
//!   holds lmforge outputs is refused unless `overwrite`, and then its old
//!   files are replaced or deleted only after the new ones are complete.
//! - [`claim_output_file`]: the same rule for one output file.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The lock file inside a folder being written.
pub const LOCK_FILE: &str = ".lmforge.lock";

/// Staging folders are named `.lmforge-new.PID` inside the output folder.
const STAGING_PREFIX: &str = ".lmforge-new.";

/// Every file lmforge writes into a run or an exported folder: what makes a
/// folder an existing output, and what `--overwrite` replaces (other files
/// in the folder are left alone). The sharded-weights index is there so that
/// a replaced Hugging Face folder cannot point loaders at its old shards.
pub const OUTPUT_FILES: [&str; 17] = [
    crate::checkpoint::MODEL_FILE,
    crate::checkpoint::CONFIG_FILE,
    crate::checkpoint::TOKENIZER_FILE,
    crate::checkpoint::TRAIN_CONFIG_FILE,
    crate::checkpoint::STATE_FILE,
    crate::checkpoint::weights::INDEX_FILE,
    crate::train::guard::METRICS_FILE,
    crate::train::observe::SAMPLES_FILE,
    crate::finetune::adapters::ADAPTER_FILE,
    crate::finetune::adapters::ADAPTER_CONFIG_FILE,
    crate::chat::jinja::TOKENIZER_CONFIG_FILE,
    crate::chat::jinja::TEMPLATE_FILE,
    crate::chat::jinja::GENERATION_CONFIG_FILE,
    crate::report::REPORT_FILE,
    "loss.png",
    "loss.svg",
    "special_tokens_map.json",
];

/// Who holds a folder's lock, as written in its lock file.
#[derive(serde::Serialize, serde::Deserialize)]
struct Holder {
    pid: u32,
    command: String,
    started: String,
}

/// The exclusive right to write a folder, held until dropped. Dropping it
/// deletes the lock file (and the folder, if taking the lock created it and
/// nothing was written).
#[derive(Debug)]
pub struct RunLock {
    /// Open and locked, never read: closing it releases the lock.
    _file: File,
    path: PathBuf,
    /// The folder, when taking the lock created it.
    made_dir: Option<PathBuf>,
}

impl RunLock {
    /// Lock `dir` (created if missing) for `command` (e.g. `lmforge train`),
    /// then remove the temporaries and staging folders that killed writers
    /// left in it. Fails at once, naming the holder, when another process
    /// writes `dir`.
    pub fn acquire(dir: &Path, command: &str) -> Result<RunLock> {
        let made_dir = (!dir.exists()).then(|| dir.to_path_buf());
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let locked = Self::lock(dir, command, made_dir.clone());
        if let (Err(_), Some(made)) = (&locked, &made_dir) {
            let _ = std::fs::remove_dir(made); // refused: leave no empty folder
        }
        let lock = locked?;
        remove_stale(dir)?;
        Ok(lock)
    }

    /// Lock `DIR/.lmforge.lock` and write who holds it.
    fn lock(dir: &Path, command: &str, made_dir: Option<PathBuf>) -> Result<RunLock> {
        let path = dir.join(LOCK_FILE);
        let mut lock = None;
        // The holder deletes its lock file as it lets go: the file locked here
        // may already be gone from the folder, and then it is opened again.
        for _ in 0..10 {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Err(in_use(dir, &path)),
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
            if is_same_file(&file, &path) {
                lock = Some(file);
                break;
            }
        }
        let Some(mut file) = lock else {
            return Err(in_use(dir, &path));
        };
        let holder = Holder {
            pid: std::process::id(),
            command: command.to_string(),
            started: chrono::Utc::now()
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string(),
        };
        let json = serde_json::to_vec(&holder).expect("a holder serialises");
        file.set_len(0)
            .and_then(|()| file.write_all(&json))
            .map_err(|e| Error::io(&path, e))?;
        Ok(RunLock {
            _file: file,
            path,
            made_dir,
        })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Deleted while still locked; `acquire` copes with a file deleted
        // under it. The lock itself goes when `_file` closes, after this.
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = &self.made_dir {
            let _ = std::fs::remove_dir(dir); // only if nothing was written
        }
    }
}

/// Whether `file` is still the file at `path`.
fn is_same_file(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

/// The error for a folder another process has locked, naming it when its
/// lock file says who it is (a holder may not have written that yet).
fn in_use(dir: &Path, lock_path: &Path) -> Error {
    let mut holder = None;
    for _ in 0..10 {
        let mut text = String::new();
        let read = File::open(lock_path).and_then(|mut f| f.read_to_string(&mut text));
        holder = read
            .ok()
            .and_then(|_| serde_json::from_str::<Holder>(&text).ok());
        if holder.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let holder = match holder {
        Some(h) => format!("process {} ({}, started {})", h.pid, h.command, h.started),
        None => format!("another process (it holds {})", lock_path.display()),
    };
    Error::InUse {
        path: dir.to_path_buf(),
        holder,
    }
}

/// Delete what writers killed before they finished left in `dir`: the
/// temporaries of [`OUTPUT_FILES`] and staging folders of processes no
/// longer running. Returns the names removed.
pub fn remove_stale(dir: &Path) -> Result<Vec<String>> {
    let mut removed = crate::fsutil::remove_stale_temps(dir, &OUTPUT_FILES)?;
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let pid = name
            .strip_prefix(STAGING_PREFIX)
            .and_then(|p| p.parse().ok());
        if pid.is_some_and(|pid| !crate::fsutil::process_alive(pid)) && path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            removed.push(name.into_owned());
        }
    }
    Ok(removed)
}

/// The names of [`OUTPUT_FILES`] present in `dir`.
fn outputs_in(dir: &Path) -> Vec<&'static str> {
    OUTPUT_FILES
        .into_iter()
        .filter(|name| dir.join(name).exists())
        .collect()
}

fn output_exists(path: &Path, files: &[&str]) -> Error {
    let holds = match files.is_empty() {
        true => String::new(),
        false => format!(" and holds {}", files.join(", ")),
    };
    Error::OutputExists {
        path: path.to_path_buf(),
        holds,
    }
}

/// Write the folder `out` as `command` does, with `write` (which fills the
/// folder it is given): `out` is locked ([`RunLock`]); a folder already
/// holding lmforge outputs is refused unless `overwrite`; `write` fills a
/// staging folder inside `out`, whose files are moved into place only when
/// it succeeded. With `overwrite`, the old output files the new output does
/// not replace are deleted after that. A failure or a kill leaves `out` as
/// it was (a killed writer's staging folder is removed by the next writer).
pub fn write_new_output<T>(
    out: &Path,
    command: &str,
    overwrite: bool,
    write: impl FnOnce(&Path) -> Result<T>,
) -> Result<T> {
    let _lock = RunLock::acquire(out, command)?;
    let existing = outputs_in(out);
    if !existing.is_empty() && !overwrite {
        return Err(output_exists(out, &existing));
    }
    let staging = Staging::create(out)?;
    let value = write(&staging.path)?;
    staging.move_into(out, overwrite)?;
    Ok(value)
}

/// A staging folder, deleted with what it holds unless moved into place.
struct Staging {
    path: PathBuf,
}

impl Staging {
    fn create(out: &Path) -> Result<Self> {
        let path = out.join(format!("{STAGING_PREFIX}{}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
        std::fs::create_dir(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Staging { path })
    }

    /// Rename every staged file into `out` (each rename replaces one file
    /// whole), then, with `overwrite`, delete the old outputs not replaced.
    fn move_into(self, out: &Path, overwrite: bool) -> Result<()> {
        let mut staged = Vec::new();
        for entry in std::fs::read_dir(&self.path).map_err(|e| Error::io(&self.path, e))? {
            staged.push(entry.map_err(|e| Error::io(&self.path, e))?.file_name());
        }
        let clashes: Vec<String> = staged
            .iter()
            .filter(|name| out.join(name).exists())
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        if !overwrite && !clashes.is_empty() {
            let names: Vec<&str> = clashes.iter().map(String::as_str).collect();
            return Err(output_exists(out, &names));
        }
        for name in &staged {
            let (from, to) = (self.path.join(name), out.join(name));
            std::fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
        }
        if overwrite {
            for name in OUTPUT_FILES {
                let path = out.join(name);
                if !staged.iter().any(|s| s == name) && path.is_file() {
                    std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                }
            }
        }
        if let Ok(dir) = File::open(out) {
            let _ = dir.sync_all(); // persist the renames
        }
        Ok(()) // dropping `self` removes the now empty staging folder
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Make ready to write the file `path` (written atomically by the caller):
/// refuse an existing file unless `overwrite` (the atomic write then
/// replaces it only once the new one is complete), and remove the
/// temporaries of `path` that killed writers left beside it.
pub fn claim_output_file(path: &Path, overwrite: bool) -> Result<()> {
    if path.is_dir() {
        return Err(Error::Config(format!(
            "{} is a directory; --out names the file to write",
            path.display()
        )));
    }
    if path.exists() && !overwrite {
        return Err(output_exists(path, &[]));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    crate::fsutil::remove_stale_temps(dir, &[&name.to_string_lossy()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_dropped_lock_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let lock = RunLock::acquire(&run, "lmforge train").unwrap();
        let err = RunLock::acquire(&run, "lmforge train")
            .unwrap_err()
            .to_string();
        let pid = std::process::id();
        assert!(
            err.contains(&format!(
                "is in use by process {pid} (lmforge train, started "
            )),
            "{err}"
        );
        std::fs::write(run.join("notes.txt"), b"x").unwrap();
        drop(lock);
        assert!(
            !run.join(LOCK_FILE).exists(),
            "the lock file goes with the lock"
        );
        let again = RunLock::acquire(&run, "lmforge export-hf").unwrap();
        drop(again);
        assert!(run.join("notes.txt").exists());
    }

    #[test]
    fn a_folder_made_for_the_lock_goes_when_nothing_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("new");
        drop(RunLock::acquire(&run, "lmforge train").unwrap());
        assert!(!run.exists());
    }

    #[test]
    fn stale_staging_folders_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // A pid above the kernel's maximum (4194304) never runs.
        let dead = dir.path().join(".lmforge-new.999999999");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join("model.safetensors.tmp.999999999"), b"x").unwrap();
        let ours = dir
            .path()
            .join(format!(".lmforge-new.{}", std::process::id()));
        std::fs::create_dir(&ours).unwrap();
        std::fs::write(dir.path().join("model.safetensors.tmp.999999999"), b"x").unwrap();
        let mut removed = remove_stale(dir.path()).unwrap();
        removed.sort();
        assert_eq!(
            removed,
            [".lmforge-new.999999999", "model.safetensors.tmp.999999999"]
        );
        assert!(ours.exists(), "a live writer's staging folder stays");
    }

    #[test]
    fn outputs_are_refused_then_replaced_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let write = |files: &'static [&'static str]| {
            move |d: &Path| -> Result<()> {
                for f in files {
                    std::fs::write(d.join(f), f.as_bytes()).unwrap();
                }
                Ok(())
            }
        };
        write_new_output(
            &out,
            "t",
            false,
            write(&["model.safetensors", "config.json"]),
        )
        .unwrap();
        std::fs::write(out.join("metrics.jsonl"), b"old").unwrap();
        std::fs::write(out.join("notes.txt"), b"mine").unwrap();
        let err = write_new_output(&out, "t", false, write(&["model.safetensors"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--overwrite") && err.contains("config.json"),
            "{err}"
        );
        let failing = |_: &Path| -> Result<()> { Err(Error::Data("disk full".into())) };
        assert!(write_new_output(&out, "t", true, failing).is_err());
        assert_eq!(std::fs::read(out.join("metrics.jsonl")).unwrap(), b"old");
        write_new_output(
            &out,
            "t",
            true,
            write(&["model.safetensors", "tokenizer.json"]),
        )
        .unwrap();
        assert!(out.join("tokenizer.json").exists());
        assert!(
            !out.join("config.json").exists(),
            "old outputs not replaced are deleted"
        );
        assert!(!out.join("metrics.jsonl").exists());
        assert!(out.join("notes.txt").exists(), "other files stay");
        let left = std::fs::read_dir(&out).unwrap().count();
        assert_eq!(left, 3, "no staging folder or lock file left");
    }

    #[test]
    fn an_output_file_is_refused_unless_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tok.json");
        claim_output_file(&path, false).unwrap();
        std::fs::write(&path, b"{}").unwrap();
        std::fs::write(dir.path().join("tok.json.tmp.999999999"), b"x").unwrap();
        let err = claim_output_file(&path, false).unwrap_err().to_string();
        assert!(
            err.contains("already exists") && err.contains("--overwrite"),
            "{err}"
        );
        claim_output_file(&path, true).unwrap();
        assert!(!dir.path().join("tok.json.tmp.999999999").exists());
        assert!(claim_output_file(dir.path(), true).is_err());
    }
}
