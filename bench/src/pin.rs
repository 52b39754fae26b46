//! Keeps the code of the processes the benchmark measures in memory. On this
//! kind of VM the kernel's proactive reclaim (DAMON `pageout` of pages unused
//! for a minute) drops cold page cache, code included; the next call of a
//! rarely used path of redis-server (the Lua engine after a minute of GETs),
//! of the job or of the benchmark then waits for a disk read, tens of ms,
//! which shows up in the tail latency as if Redis had been busy. Locking the
//! files' pages (mmap + mlock, which page reclaim skips) keeps them resident.
//! Anonymous memory (the keyspace) cannot be paged out here: there is no swap.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// A file mapped and locked in memory until dropped.
pub struct Pinned {
    addr: *mut libc::c_void,
    len: usize,
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `pin_file` (which also
        // drops its lock).
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// Maps `path` read-only and locks its pages. None when it cannot (no such
/// file, empty, or the lock refused: then the benchmark runs unpinned).
fn pin_file(path: &Path) -> Option<Pinned> {
    let file = File::open(path).ok()?;
    let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
    if len == 0 {
        return None;
    }
    // SAFETY: a fresh shared read-only mapping of an open file; the kernel
    // keeps it valid after the fd is closed.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return None;
    }
    let pinned = Pinned { addr, len };
    // SAFETY: locks the mapping just made.
    let rc = unsafe { libc::mlock(addr, len) };
    (rc == 0).then_some(pinned)
}

/// The files mapped executable by process `pid` (its binary and libraries).
fn executable_files(pid: &str) -> Vec<PathBuf> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let perms = fields.nth(1)?;
            let path = fields.nth(3)?;
            (perms.contains('x') && path.starts_with('/')).then(|| PathBuf::from(path))
        })
        .collect()
}

/// Pins the executable files of the given processes (ids, or "self") and the
/// given extra files. Returns the pins (hold them for the whole benchmark)
/// and their total size in bytes.
pub fn pin_code(pids: &[String], extra: &[PathBuf]) -> (Vec<Pinned>, usize) {
    let mut files: BTreeSet<PathBuf> = extra.iter().cloned().collect();
    for pid in pids {
        files.extend(executable_files(pid));
    }
    let pins: Vec<Pinned> = files.iter().filter_map(|f| pin_file(f)).collect();
    let bytes = pins.iter().map(|p| p.len).sum();
    (pins, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_code_is_found_and_pinned() {
        let files = executable_files("self");
        assert!(
            files
                .iter()
                .any(|f| f.to_string_lossy().contains("janitor_bench")
                    || f.to_string_lossy().contains("janitor-bench")),
            "{files:?}"
        );
        let (pins, bytes) = pin_code(&["self".to_string()], &[]);
        assert!(!pins.is_empty() && bytes > 0);
    }
}
