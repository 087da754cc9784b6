//! Writing one lmforge shard ([`super::header`] gives the layout) so that a
//! file under a shard's final name is always complete: it is written under a
//! `.tmp` name, its header's token count filled in at the end, flushed to
//! disk and only then renamed. A writer dropped before it finishes (an
//! error such as a full disk) deletes its temporary file.

use super::header::{Dtype, ShardHeader};
use crate::error::{Error, Result};
use crate::fsutil::TempGuard;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Writes one shard under a temporary name; [`ShardWriter::finish`] fills in the
/// token count, flushes to disk and only then renames it to its final name.
pub struct ShardWriter {
    path: PathBuf,
    tmp: PathBuf,
    /// Deletes `tmp` unless the shard was renamed into place.
    guard: TempGuard,
    file: BufWriter<File>,
    header: ShardHeader,
}

impl ShardWriter {
    /// Start a shard that will appear at `path`. `header.tokens` is ignored.
    pub fn create(path: &Path, header: ShardHeader) -> Result<Self> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let guard = TempGuard::new(tmp.clone());
        let mut file = BufWriter::with_capacity(1 << 20, file);
        file.write_all(&header.to_bytes())
            .map_err(|e| Error::io(&tmp, e))?;
        Ok(ShardWriter {
            path: path.to_path_buf(),
            tmp,
            guard,
            file,
            header: ShardHeader {
                tokens: 0,
                ..header
            },
        })
    }

    pub fn dtype(&self) -> Dtype {
        self.header.dtype
    }

    /// Tokens written so far.
    pub fn tokens(&self) -> u64 {
        self.header.tokens
    }

    /// Append `count` tokens already encoded in this shard's dtype (little-endian).
    pub fn write_encoded(&mut self, bytes: &[u8], count: u64) -> Result<()> {
        debug_assert_eq!(bytes.len() as u64, count * self.header.dtype.bytes() as u64);
        self.file
            .write_all(bytes)
            .map_err(|e| Error::io(&self.tmp, e))?;
        self.header.tokens += count;
        Ok(())
    }

    /// Write the final header, sync and rename into place. Returns the token count.
    pub fn finish(self) -> Result<u64> {
        let ShardWriter {
            path,
            tmp,
            guard,
            file,
            header,
        } = self;
        let result = (|| {
            let mut file = file.into_inner().map_err(|e| e.into_error())?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&header.to_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            return Err(Error::io(&path, e)); // the guard deletes the temporary
        }
        guard.keep();
        Ok(header.tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::super::header::HEADER_BYTES;
    use super::*;

    #[test]
    fn writer_only_shows_the_final_name_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train_000000.bin");
        let header = ShardHeader {
            dtype: Dtype::U16,
            tokens: 0,
            vocab_size: 3,
            tokenizer_id: 42,
            tokenizer_kind: "char".into(),
        };
        let mut w = ShardWriter::create(&path, header).unwrap();
        w.write_encoded(&[1, 0, 2, 0], 2).unwrap();
        assert!(!path.exists());
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), HEADER_BYTES + 4);
        assert_eq!(u64::from_le_bytes(bytes[16..24].try_into().unwrap()), 2);
        assert_eq!(&bytes[HEADER_BYTES..], &[1, 0, 2, 0]);
    }

    /// A shard abandoned half-way (a write error, e.g. a full disk, drops
    /// the writer) leaves no `.tmp` file to fill the disk.
    #[test]
    fn an_unfinished_shard_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train_000000.bin");
        let header = ShardHeader {
            dtype: Dtype::U16,
            tokens: 0,
            vocab_size: 3,
            tokenizer_id: 42,
            tokenizer_kind: "char".into(),
        };
        let mut w = ShardWriter::create(&path, header).unwrap();
        w.write_encoded(&[1, 0], 1).unwrap();
        assert!(dir.path().join("train_000000.bin.tmp").exists());
        drop(w);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
