//! Reading the config and weight files without trusting what is at the path.
//!
//! A path can name a FIFO (opening it blocks until a writer comes), a device
//! (`/dev/zero` never ends), a directory, or a huge file that is re-read on
//! every poll. Only regular files (after following links) of at most
//! [`MAX_FILE_BYTES`] are read, the open never blocks, and the text must be
//! UTF-8. Every read of either file goes through [`read_text`]; every write
//! through [`write_atomic`].

use std::fs::{File, Metadata, OpenOptions};
use std::io::{Read, Write};
use std::mem::Discriminant;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Largest config or weight file read. Real ones are a few kilobytes; a
/// thousand routes stay well under a megabyte.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Why a file was not read, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct FileError {
    pub path: PathBuf,
    pub problem: FileProblem,
}

#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    #[error("is {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("is {}, larger than the {} limit", size_text(*size), size_text(*limit))]
    TooLarge { size: u64, limit: u64 },
    #[error("grew past the {} limit while being read", size_text(*limit))]
    Grew { limit: u64 },
    #[error("is not UTF-8 at byte {0}")]
    NotUtf8(usize),
    #[error("does not exist")]
    NotFound,
    #[error("permission denied")]
    PermissionDenied,
    #[error("cannot read: {0}")]
    Io(std::io::Error),
}

impl FileError {
    /// The file and the kind of problem, without details that change from
    /// one read to the next (a growing size): the same key is the same problem.
    pub fn key(&self) -> (PathBuf, Discriminant<FileProblem>) {
        (self.path.clone(), std::mem::discriminant(&self.problem))
    }
}

/// The whole text of the file at `path`, read as described in the module doc.
/// Blocking (it reads a file): async callers use `spawn_blocking`.
pub fn read_text(path: &Path) -> Result<String, FileError> {
    read_text_limited(path, MAX_FILE_BYTES)
}

fn read_text_limited(path: &Path, limit: u64) -> Result<String, FileError> {
    let fail = |problem| FileError {
        path: path.to_path_buf(),
        problem,
    };
    // Checked before opening, so a device is never opened at all ...
    let before = std::fs::metadata(path).map_err(|e| fail(io_problem(e)))?;
    check(&before, limit).map_err(fail)?;
    // ... and again on what was opened, which may have been swapped in since.
    // O_NONBLOCK: opening a FIFO that appeared meanwhile returns at once.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| fail(io_problem(e)))?;
    let opened = file.metadata().map_err(|e| fail(io_problem(e)))?;
    check(&opened, limit).map_err(fail)?;
    let bytes = read_at_most(file, opened.len(), limit).map_err(|e| fail(io_problem(e)))?;
    if bytes.len() as u64 > limit {
        return Err(fail(FileProblem::Grew { limit }));
    }
    String::from_utf8(bytes).map_err(|e| fail(FileProblem::NotUtf8(e.utf8_error().valid_up_to())))
}

/// Reads up to `limit + 1` bytes, so a file that grew since `fstat` is caught.
/// Writes `contents` to `path` so that a crash at any moment leaves either
/// the old file or the new one: a temp file in the same folder, fsync,
/// rename over, fsync the folder.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}-{:08x}", std::process::id(), rand::random::<u32>()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        if let Ok(meta) = std::fs::metadata(path) {
            let _ = file.set_permissions(meta.permissions());
        }
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn read_at_most(file: File, expected: u64, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(expected.min(limit) as usize + 1);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn check(meta: &Metadata, limit: u64) -> Result<(), FileProblem> {
    let kind = meta.file_type();
    if !kind.is_file() {
        return Err(FileProblem::NotRegular(if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "something else"
        }));
    }
    if meta.len() > limit {
        return Err(FileProblem::TooLarge { size: meta.len(), limit });
    }
    Ok(())
}

fn io_problem(e: std::io::Error) -> FileProblem {
    match e.kind() {
        std::io::ErrorKind::NotFound => FileProblem::NotFound,
        std::io::ErrorKind::PermissionDenied => FileProblem::PermissionDenied,
        _ => FileProblem::Io(e),
    }
}

/// `512 bytes`, `12.5 KiB`, `50 MiB`.
fn size_text(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    let (value, unit) = match bytes {
        b if b >= MIB => (b as f64 / MIB as f64, "MiB"),
        b if b >= KIB => (b as f64 / KIB as f64, "KiB"),
        b => return format!("{b} bytes"),
    };
    let text = format!("{value:.1}");
    format!("{} {unit}", text.strip_suffix(".0").unwrap_or(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(path: &Path, limit: u64) -> String {
        read_text_limited(path, limit).unwrap_err().to_string()
    }

    #[test]
    fn only_small_regular_utf8_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.yaml");
        std::fs::write(&ok, "a: 1\n").unwrap();
        assert_eq!(read_text(&ok).unwrap(), "a: 1\n");
        let link = dir.path().join("link.yaml");
        std::os::unix::fs::symlink(&ok, &link).unwrap();
        assert_eq!(read_text(&link).unwrap(), "a: 1\n", "links are followed");

        let fifo = dir.path().join("fifo.yaml");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(problem(&fifo, 100).ends_with("fifo.yaml: is a FIFO, not a regular file"));
        assert!(problem(dir.path(), 100).ends_with(": is a directory, not a regular file"));
        let zero = dir.path().join("zero.yaml");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(problem(&zero, 100).ends_with("zero.yaml: is a character device, not a regular file"));

        let big = dir.path().join("big.yaml");
        std::fs::write(&big, vec![b'#'; 3 * 1024 * 1024 / 2]).unwrap();
        assert!(
            problem(&big, 1024 * 1024).ends_with("big.yaml: is 1.5 MiB, larger than the 1 MiB limit"),
            "{}",
            problem(&big, 1024 * 1024)
        );
        let latin1 = dir.path().join("latin1.yaml");
        std::fs::write(&latin1, b"a: caf\xe9\n").unwrap();
        assert!(problem(&latin1, 100).ends_with("latin1.yaml: is not UTF-8 at byte 6"));
        assert!(problem(&dir.path().join("none.yaml"), 100).ends_with("none.yaml: does not exist"));
    }

    #[test]
    fn a_file_that_grows_past_the_limit_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.yaml");
        std::fs::write(&path, "0123456789").unwrap();
        let file = File::open(&path).unwrap();
        std::fs::write(&path, "0123456789abcdef").unwrap();
        // Sized at 10 bytes when opened, 16 by the time it is read.
        assert_eq!(read_at_most(file, 10, 12).unwrap().len(), 13);
    }
}
