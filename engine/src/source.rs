//! Where model bytes come from. Everything reads through `ByteSource::read_at`, so nothing ever needs the whole
//! file in memory: the same loader works on a native file, an HTTP range reader or an OPFS handle.

use crate::{Error, Result};
use std::future::Future;

pub trait ByteSource {
    /// Total length in bytes.
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads exactly `len` bytes at `offset`; reading past the end is an error, not a short read.
    fn read_at(&self, offset: u64, len: usize) -> impl Future<Output = Result<Vec<u8>>>;

    /// A short label for messages (a file name or URL).
    fn name(&self) -> String;
}

/// An in-memory source, for tests and for small files such as config.json.
pub struct MemorySource {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl ByteSource for MemorySource {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let end = offset
            .checked_add(len as u64)
            .filter(|&e| e <= self.len())
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "read of {len} bytes at {offset} is past the end of {}",
                    self.name
                ))
            })?;
        Ok(self.bytes[offset as usize..end as usize].to_vec())
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::FileSource;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::ByteSource;
    use crate::{Error, Result};
    use std::fs::File;
    use std::path::{Path, PathBuf};

    /// A file on disk, read with positional reads (no seeking state, no mapping of the whole file).
    pub struct FileSource {
        path: PathBuf,
        file: File,
        len: u64,
    }

    impl FileSource {
        pub fn open(path: impl AsRef<Path>) -> Result<Self> {
            let path = path.as_ref().to_path_buf();
            let file = File::open(&path).map_err(|e| {
                Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", path.display()),
                ))
            })?;
            let len = file.metadata()?.len();
            Ok(Self { path, file, len })
        }
    }

    impl ByteSource for FileSource {
        fn len(&self) -> u64 {
            self.len
        }

        async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
            use std::os::unix::fs::FileExt;
            if offset
                .checked_add(len as u64)
                .is_none_or(|end| end > self.len)
            {
                return Err(Error::InvalidArgument(format!(
                    "read of {len} bytes at {offset} is past the end of {} ({} bytes)",
                    self.path.display(),
                    self.len
                )));
            }
            let mut buf = vec![0u8; len];
            self.file.read_exact_at(&mut buf, offset)?;
            Ok(buf)
        }

        fn name(&self) -> String {
            self.path.display().to_string()
        }
    }
}
