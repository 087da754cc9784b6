//! Finding a model by name in the local Hugging Face cache, never the network.
//!
//! `huggingface_hub` keeps each downloaded repository as
//! ```text
//! <hub>/models--<org>--<name>/refs/main           the commit hash of "main"
//! <hub>/models--<org>--<name>/snapshots/<hash>/   the files (links into blobs/)
//! ```
//! where `<hub>` is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
//! GPT-2's repositories moved to `openai-community/` (and `distilgpt2` to
//! `distilbert/`); a bare name is looked up under both spellings.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The hub cache folder the environment points to.
pub fn hub_dir() -> Option<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface").join("hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("huggingface").join("hub")))
}

/// Repository ids a name may be cached under.
fn candidate_ids(name: &str) -> Vec<String> {
    let mut ids = vec![name.to_string()];
    if !name.contains('/') {
        let org = if name == "distilgpt2" {
            "distilbert"
        } else {
            "openai-community"
        };
        ids.push(format!("{org}/{name}"));
    }
    if let Some(bare) = name.strip_prefix("openai-community/") {
        ids.push(bare.to_string());
    }
    ids
}

/// Could `name` be a repository id (`gpt2`, `org/name`) rather than a path?
fn looks_like_repo_id(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// The snapshot folder of repository `id` in `hub`: the one `refs/main`
/// names, or else the most recently written one.
fn snapshot(hub: &Path, id: &str) -> Option<PathBuf> {
    let repo = hub.join(format!("models--{}", id.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    if let Ok(hash) = std::fs::read_to_string(repo.join("refs").join("main")) {
        let dir = snapshots.join(hash.trim());
        if dir.join("config.json").exists() {
            return Some(dir);
        }
    }
    let newest = std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("config.json").exists())
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())?;
    Some(newest.path())
}

/// A model folder: `name` itself if it is one, else its snapshot in the cache.
pub fn resolve(name: &str) -> Result<PathBuf> {
    let path = Path::new(name);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let hub = hub_dir();
    if looks_like_repo_id(name)
        && let Some(hub) = &hub
        && let Some(dir) = candidate_ids(name).iter().find_map(|id| snapshot(hub, id))
    {
        return Ok(dir);
    }
    let looked = match (&hub, looks_like_repo_id(name)) {
        (Some(hub), true) => format!(
            "not a folder, and not in the local Hugging Face cache ({} holds no {})",
            hub.display(),
            candidate_ids(name)
                .iter()
                .map(|id| format!("models--{}", id.replace('/', "--")))
                .collect::<Vec<_>>()
                .join(" or ")
        ),
        (None, true) => {
            "not a folder, and no Hugging Face cache is set (HF_HOME, HF_HUB_CACHE, HOME)".into()
        }
        (_, false) => {
            return Err(Error::Config(format!(
                "{name}: no such folder (a local path, not a Hugging Face model name: \
                 it was moved or deleted)"
            )));
        }
    };
    Err(Error::Config(format!(
        "{name}: {looked}. lmforge never downloads: fetch the model once elsewhere \
         (e.g. `huggingface-cli download {name}`) or pass a save_pretrained folder"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_are_told_apart() {
        assert!(looks_like_repo_id("gpt2"));
        assert!(looks_like_repo_id("openai-community/gpt2-medium"));
        assert!(!looks_like_repo_id("runs/a/b"));
        assert!(!looks_like_repo_id("../gpt2"));
        assert!(!looks_like_repo_id("/models/gpt2"));
        assert_eq!(candidate_ids("gpt2"), ["gpt2", "openai-community/gpt2"]);
        assert_eq!(candidate_ids("distilgpt2")[1], "distilbert/distilgpt2");
    }

    #[test]
    fn snapshot_follows_refs_main() {
        let hub = tempfile::tempdir().unwrap();
        let repo = hub.path().join("models--openai-community--gpt2");
        for hash in ["aaa", "bbb"] {
            std::fs::create_dir_all(repo.join("snapshots").join(hash)).unwrap();
            std::fs::write(repo.join("snapshots").join(hash).join("config.json"), "{}").unwrap();
        }
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join("main"), "aaa\n").unwrap();
        let found = candidate_ids("gpt2")
            .iter()
            .find_map(|id| snapshot(hub.path(), id));
        assert_eq!(found, Some(repo.join("snapshots").join("aaa")));
        assert_eq!(snapshot(hub.path(), "gpt2-xl"), None);
    }
}
