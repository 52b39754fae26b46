//! The small files the job is given (rules, passwords, certificates), read
//! with a bound: a wrong one (`/dev/zero`, a log, a disk image) costs the job
//! at most [`MAX_BYTES`] of memory, and is refused, before any connection.

use std::fmt;
use std::io::Read;
use std::path::Path;

/// The most bytes any such file may hold: 1 MiB, far more than a rules file,
/// a password or a bundle of CA certificates needs.
pub const MAX_BYTES: u64 = 1024 * 1024;

/// Why a file was not read.
#[derive(Debug)]
pub enum Unread {
    /// Reading it failed.
    Io(std::io::Error),
    /// It holds more than [`MAX_BYTES`].
    TooLarge,
}

impl fmt::Display for Unread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unread::Io(err) => err.fmt(f),
            Unread::TooLarge => write!(f, "larger than {} KiB", MAX_BYTES / 1024),
        }
    }
}

/// The bytes of `file`, at most [`MAX_BYTES`] (never read further).
pub fn read_at_most(file: impl Read) -> Result<Vec<u8>, Unread> {
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(Unread::Io)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(Unread::TooLarge);
    }
    Ok(bytes)
}

/// The bytes of the file at `path` (see [`read_at_most`]).
pub fn read(path: &Path) -> Result<Vec<u8>, Unread> {
    read_at_most(std::fs::File::open(path).map_err(Unread::Io)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_read_up_to_the_bound() {
        let most = vec![b'x'; MAX_BYTES as usize];
        assert_eq!(read_at_most(most.as_slice()).unwrap(), most);
        let over = read_at_most(std::io::repeat(b'x')).unwrap_err();
        assert_eq!(over.to_string(), "larger than 1024 KiB");
        assert!(matches!(
            read(Path::new("/no/such/file")),
            Err(Unread::Io(_))
        ));
    }
}
