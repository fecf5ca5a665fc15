//! The dump file: every session of a store as JSON lines, written by [`Store::export`]
//! (while the store serves requests: an online backup) and read back by
//! [`Store::import`] and the `sessile import` command. Version 2 (version 1 is read too).
//!
//! A dump is UTF-8 JSON lines (one JSON object per line, `\n`-terminated):
//!
//! 1. a header: `{"format":"sessile-dump","version":2,"store_format":2,"sessile":"0.1.0",
//!    "exported_at":1767225600000}`;
//! 2. one line per stored session, live or expired, in storage order:
//!    `{"key":"…","created_at":…,"last_seen":…,"expires_at":…,"version":…,"user":"alice"|null,
//!    "values":{"cart":"…"}}`, plus `"idle_timeout_ms":…` and `"absolute_timeout_ms":…` for
//!    a session with its own lifetime (new in version 2; absent: the store's timeouts);
//! 3. a trailer: `{"end":true,"sessions":N}`, so a truncated file is refused.
//!
//! `key` is the 32-byte storage digest of the token, and each value the stored bytes of
//! that key, both URL-safe base64 without padding. Times are milliseconds since the Unix
//! epoch. Readers ignore header fields they do not know; any other change to the format
//! gets a new `version`, and readers refuse versions they do not know.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Store;
use crate::transfer::SessionDump;

/// The `format` of every dump header.
const FORMAT: &str = "sessile-dump";
/// The dump format version this build writes.
const VERSION: u32 = 2;
/// The dump format versions this build reads: 1 is 2 without per-session timeouts.
const READS: [u32; 2] = [1, 2];

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    #[serde(default)]
    store_format: Option<u32>,
    #[serde(default)]
    sessile: Option<String>,
    #[serde(default)]
    exported_at: Option<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    key: String,
    created_at: u64,
    last_seen: u64,
    expires_at: u64,
    version: u64,
    user: Option<String>,
    values: BTreeMap<String, String>,
    /// The session's own timeouts (since store format 2); absent: the store's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idle_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    absolute_timeout_ms: Option<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Trailer {
    end: bool,
    sessions: u64,
}

impl Line {
    fn of(dump: &SessionDump) -> Line {
        Line {
            key: dump.key.clone(),
            created_at: dump.created_at,
            last_seen: dump.last_seen,
            expires_at: dump.expires_at,
            version: dump.version,
            user: dump.user.clone(),
            values: dump
                .values
                .iter()
                .map(|(k, v)| (k.clone(), URL_SAFE_NO_PAD.encode(v)))
                .collect(),
            idle_timeout_ms: dump.idle_timeout_ms,
            absolute_timeout_ms: dump.absolute_timeout_ms,
        }
    }

    fn into_dump(self) -> std::result::Result<SessionDump, String> {
        let mut dump = SessionDump::new(self.key.clone())
            .map_err(|_| format!("key {:?} is not a 32-byte session key", self.key))?;
        for (k, v) in self.values {
            let bytes = URL_SAFE_NO_PAD
                .decode(&v)
                .map_err(|e| format!("the value of {k:?} is not URL-safe base64: {e}"))?;
            dump.values.insert(k, bytes);
        }
        dump.created_at = self.created_at;
        dump.last_seen = self.last_seen;
        dump.expires_at = self.expires_at;
        dump.version = self.version;
        dump.user = self.user;
        dump.idle_timeout_ms = self.idle_timeout_ms;
        dump.absolute_timeout_ms = self.absolute_timeout_ms;
        Ok(dump)
    }
}

fn invalid(detail: String) -> Error {
    Error::InvalidDump { detail }
}

impl Store {
    /// Writes every stored session, live or expired, to `out` as a dump file (the format
    /// `sessile import` and [`import`](Store::import) read), and returns how many it
    /// wrote. Call it while the store serves requests: this is the online backup. Every
    /// session that is live when it starts and not destroyed before it ends is in the
    /// dump; sessions created or changed meanwhile may be, as they were at that moment.
    /// `out` is not flushed to disk: see [`export_to`](Store::export_to) for a file.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), sessile::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = sessile::Store::open(dir.path().join("sessions"))?;
    /// let session = store.create()?;
    /// let mut backup = Vec::new();
    /// assert_eq!(store.export(&mut backup)?, 1);
    ///
    /// let restored = sessile::Store::open(dir.path().join("restored"))?;
    /// assert_eq!(restored.import(backup.as_slice())?, 1);
    /// assert!(restored.load(session.id())?.is_some());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::DumpIo`] if writing to `out` fails; [`Error::Storage`] on a storage
    /// failure.
    pub fn export(&self, mut out: impl Write) -> Result<u64> {
        let now_ms = self.engine.now();
        let header = Header {
            format: FORMAT.into(),
            version: VERSION,
            store_format: Some(self.format_version()),
            sessile: Some(env!("CARGO_PKG_VERSION").into()),
            exported_at: Some(now_ms),
        };
        write_line(&mut out, &header)?;
        let mut n = 0;
        for dump in self.dump() {
            write_line(&mut out, &Line::of(&dump?))?;
            n += 1;
        }
        write_line(
            &mut out,
            &Trailer {
                end: true,
                sessions: n,
            },
        )?;
        out.flush().map_err(Error::DumpIo)?;
        Ok(n)
    }

    /// [`export`](Store::export) into the file `path`, written beside it and renamed
    /// into place once complete and on disk, so an interrupted backup never leaves a
    /// half-written file under that name. An existing file is replaced.
    ///
    /// # Errors
    ///
    /// [`Error::DumpIo`] if the file cannot be written (its folder missing, no space);
    /// [`Error::Storage`] on a storage failure.
    pub fn export_to(&self, path: impl AsRef<Path>) -> Result<u64> {
        let path = path.as_ref();
        let folder = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".partial-{}", std::process::id()));
        let partial = folder.join(name);
        let written = (|| {
            let file = std::fs::File::create(&partial).map_err(Error::DumpIo)?;
            let mut out = std::io::BufWriter::new(file);
            let n = self.export(&mut out)?;
            let file = out
                .into_inner()
                .map_err(|e| Error::DumpIo(e.into_error()))?;
            file.sync_all().map_err(Error::DumpIo)?;
            std::fs::rename(&partial, path).map_err(Error::DumpIo)?;
            Ok(n)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        written
    }

    /// Restores every session of the dump file read from `input` (see
    /// [`export`](Store::export)), replacing sessions under the same keys, as
    /// [`restore`](Store::restore) does, and returns how many. The dump is checked line by
    /// line as it is read: to refuse a damaged dump before writing anything, run
    /// [`check_dump`] over it first.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidDump`] for a file that is not a dump, of a version this build does
    /// not read, damaged or truncated (the sessions before the damage are restored);
    /// [`Error::DumpIo`] if reading fails; the errors of [`restore`](Store::restore).
    pub fn import(&self, input: impl BufRead) -> Result<u64> {
        read(input, |dump| self.restore(&dump))
    }
}

/// Reads the dump file in `input` through, checking every line, without writing anything:
/// returns how many sessions it holds.
///
/// # Errors
///
/// [`Error::InvalidDump`] for a file that is not a dump, of a version this build does not
/// read, damaged or truncated; [`Error::DumpIo`] if reading fails.
pub fn check_dump(input: impl BufRead) -> Result<u64> {
    read(input, |_| Ok(()))
}

fn write_line(out: &mut impl Write, line: &impl Serialize) -> Result<()> {
    serde_json::to_writer(&mut *out, line).map_err(|e| Error::DumpIo(e.into()))?;
    out.write_all(b"\n").map_err(Error::DumpIo)
}

/// Reads the dump in `input` through, checking every line, and calls `each` with each
/// session. Returns the number of sessions.
fn read(input: impl BufRead, mut each: impl FnMut(SessionDump) -> Result<()>) -> Result<u64> {
    let mut lines = input.lines();
    let first = match lines.next() {
        Some(line) => line.map_err(Error::DumpIo)?,
        None => return Err(invalid("empty, not a sessile dump".into())),
    };
    let header: Header = serde_json::from_str(&first)
        .map_err(|e| invalid(format!("line 1: not a sessile dump header: {e}")))?;
    if header.format != FORMAT {
        return Err(invalid(format!(
            "line 1: format is {:?}, expected {FORMAT:?}",
            header.format
        )));
    }
    if !READS.contains(&header.version) {
        return Err(invalid(format!(
            "a version {} dump; this sessile reads versions {} to {}",
            header.version, READS[0], READS[1]
        )));
    }
    let mut count = 0u64;
    let mut trailer = None;
    for (i, line) in lines.enumerate() {
        let number = i + 2;
        let line = line.map_err(Error::DumpIo)?;
        if trailer.is_some() {
            if line.trim().is_empty() {
                continue;
            }
            return Err(invalid(format!("line {number}: data after the end line")));
        }
        if let Ok(t) = serde_json::from_str::<Trailer>(&line) {
            trailer = Some(t);
            continue;
        }
        let parsed: Line = serde_json::from_str(&line)
            .map_err(|e| invalid(format!("line {number}: bad session line: {e}")))?;
        let dump = parsed
            .into_dump()
            .map_err(|e| invalid(format!("line {number}: {e}")))?;
        each(dump)?;
        count += 1;
    }
    match trailer {
        Some(Trailer {
            end: true,
            sessions,
        }) if sessions == count => Ok(count),
        Some(Trailer { sessions, .. }) => Err(invalid(format!(
            "damaged: its end line says {sessions} sessions, it holds {count}"
        ))),
        None => Err(invalid(
            "truncated: it has no end line (an export that did not finish?)".into(),
        )),
    }
}
