//! Tar archives: each regular file is a stream of its own, detected again.
//!
//! A corrupt member is told apart from a corrupt tar by watching the stream
//! under the tar ([`Watch`]): if that stream failed or ended while a member
//! was read, the tar is broken, not the member. Compressed members up to
//! [`MAX_BLOB`] are read whole and handed on as [`Blob`]s (when the reader
//! makes blobs), so that several decompress at once.

use super::OnBad;
use super::format::{detect, is_compressed};
use super::reader::{Blob, DocReader, MAX_BLOB, Stop, Unit, io_stop};
use std::cell::Cell;
use std::io::Read;

/// Watches the stream under a tar: an error, or its end, while a member is
/// being read means the tar is broken, not the member.
struct Watch<'a> {
    inner: &'a mut dyn Read,
    broken: &'a Cell<bool>,
}

impl Read for Watch<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let result = self.inner.read(buf);
        // A whole tar ends with zero blocks, which tar reads before its end.
        if matches!(result, Err(_) | Ok(0)) && !buf.is_empty() {
            self.broken.set(true);
        }
        result
    }
}

impl DocReader<'_> {
    pub(super) fn read_tar(
        &mut self,
        r: &mut dyn Read,
        display: &str,
        depth: usize,
    ) -> Result<(), Stop> {
        let outer_broken = Cell::new(false);
        let mut archive = tar::Archive::new(Watch {
            inner: r,
            broken: &outer_broken,
        });
        let entries = archive
            .entries()
            .map_err(|e| io_stop(display, depth + 1, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| io_stop(display, depth + 1, e))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let member = entry
                .path()
                .map_err(|e| io_stop(display, depth + 1, e))?
                .to_string_lossy()
                .into_owned();
            let member_display = format!("{display}:{member}");
            let result = if self.blobs && entry.size() <= MAX_BLOB {
                self.read_member(&mut entry, &member_display, &member, depth + 1)
            } else {
                let len = Some(entry.size());
                self.stream(&mut entry, &member_display, &member, depth + 1, len)
            };
            match result {
                // The tar itself is cut or corrupt: not this member's fault.
                Err(Stop::Archive(_, m)) if outer_broken.get() => {
                    return Err(Stop::Archive(display.into(), m));
                }
                Err(Stop::Archive(n, m)) if self.opts.on_bad_archive == OnBad::Skip => {
                    self.stats.bad_archives.push(format!("{n}: {m}"));
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// Read a small tar member whole; hand it on as a [`Blob`] if compressed.
    fn read_member(
        &mut self,
        r: &mut dyn Read,
        display: &str,
        name: &str,
        depth: usize,
    ) -> Result<(), Stop> {
        let mut bytes = Vec::new();
        r.read_to_end(&mut bytes)
            .map_err(|e| io_stop(display, depth, e))?;
        if !is_compressed(detect(&bytes, name)) {
            let len = Some(bytes.len() as u64);
            return self.stream(&mut bytes.as_slice(), display, name, depth, len);
        }
        let blob = Blob {
            bytes,
            display: display.into(),
            name: name.into(),
            key: format!("{}:{name}", self.key),
            depth,
        };
        (self.emit)(Unit::Blob(blob)).map_err(Stop::Fatal)
    }
}
