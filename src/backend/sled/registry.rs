//! The folders this process has open, so a second open fails at once with a clear error.
//!
//! sled locks the folder with an exclusive lock on its `db` file, but can keep that lock
//! for a moment after its last handle is dropped (background I/O still holds the file).
//! Dropping a [`Registration`] (after the sled `Db`) waits, for a bounded time, until the
//! lock is free, so that `drop(store); Store::open(path)` works every time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, Result};

static OPEN: Mutex<Vec<PathBuf>> = parking_lot::const_mutex(Vec::new());

/// How long to wait for a lock left behind by a store of this process that was dropped.
const LINGER: Duration = Duration::from_secs(3);
/// How long an open waits for a lock that may be a just-dropped handle's before it
/// reports the folder as locked.
pub(super) const OPEN_LINGER: Duration = Duration::from_secs(1);

/// Marks a folder as open in this process until dropped.
#[derive(Debug)]
pub(super) struct Registration {
    path: PathBuf,
    /// Set once sled opened the folder: only then is there a lock to wait for on drop.
    opened: bool,
}

impl Registration {
    /// Registers `path` (an existing folder) as open, or fails with [`Error::Locked`].
    pub(super) fn new(path: &Path) -> Result<Registration> {
        let canonical = std::fs::canonicalize(path).map_err(|source| Error::Folder {
            path: path.to_path_buf(),
            source,
        })?;
        let mut open = OPEN.lock();
        if open.contains(&canonical) {
            return Err(Error::Locked {
                path: path.to_path_buf(),
            });
        }
        open.push(canonical.clone());
        Ok(Registration {
            path: canonical,
            opened: false,
        })
    }

    /// Records that the storage engine now holds the folder's lock.
    pub(super) fn opened(mut self) -> Registration {
        self.opened = true;
        self
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.opened {
            wait_for_unlock(&self.path.join("db"), LINGER);
        }
        OPEN.lock().retain(|p| *p != self.path);
    }
}

/// Waits until no one holds the exclusive lock on `file`, for at most `limit`. Also
/// used before reporting a folder as locked: the holder may be a sled handle of this
/// process that was just dropped (sled lets go of the lock a moment later).
pub(super) fn wait_for_unlock(file: &Path, limit: Duration) {
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
    else {
        return;
    };
    let deadline = Instant::now() + limit;
    loop {
        match f.try_lock() {
            // Dropping `f` releases the probe lock.
            Ok(()) => return,
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => {
                tracing::warn!(file = %file.display(), "the storage lock was not released in time");
                return;
            }
        }
    }
}
