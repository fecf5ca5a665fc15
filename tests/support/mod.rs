//! Helpers shared by the core integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use sessile::{Config, ManualClock, Store};

#[path = "../backend/mod.rs"]
pub mod backend;
pub use backend::on_redis;

pub const IDLE: Duration = Duration::from_secs(30 * 60);
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);

/// A temp folder (or a fresh namespace on the test Redis), a manual clock and a store
/// without the background thread, so tests decide when cleanup runs.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub clock: ManualClock,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("temp dir"),
            clock: ManualClock::new(),
        }
    }

    /// A sled fixture, or `None` when the suites run on Redis: for tests that look at
    /// sled's files (their Redis counterparts are in `tests/redis.rs`).
    pub fn sled_only() -> Option<Fixture> {
        if on_redis() {
            eprintln!("a test of sled's files: skipped on Redis (see tests/redis.rs)");
            return None;
        }
        Some(Fixture::new())
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("sessions")
    }

    /// The default settings for this fixture's store, on its backend.
    pub fn base_config(&self) -> Config {
        backend::config_at(self.path())
    }

    pub fn config(&self) -> Config {
        self.base_config()
            .idle_timeout(IDLE)
            .absolute_timeout(ABSOLUTE)
            .clock(self.clock.clock())
            .purge_thread(false)
    }

    pub fn open(&self) -> Store {
        self.config().open().expect("open store")
    }
}

/// Every byte of every file under `dir`.
pub fn all_file_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(all_file_bytes(&path));
        } else {
            out.extend(std::fs::read(&path).expect("read file"));
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
