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
use std::io::{BufRead, Read, Write};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::record::codec::DECODE_LIMIT;
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
    /// wrote. Call it while the store serves requests: this is the online backup. It
    /// walks the records one by one, not a snapshot: every session that is neither
    /// changed nor destroyed while it runs is in the dump; one written meanwhile is in it
    /// as it was at some moment of the walk, and one regenerated meanwhile (a login
    /// moving it to a new key) may be missing, having left a key not yet read for one
    /// already passed. `out` is not flushed to disk: see [`export_to`](Store::export_to)
    /// for a file.
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

    /// [`export`](Store::export) into the file `path`: written to a new private file
    /// (mode 0600, created exclusively under a random name) beside it, synced, then
    /// renamed over `path` and the folder synced, so an interrupted backup never leaves a
    /// half-written file under that name and a finished one survives a crash. An existing
    /// file is replaced. Two backups running at once each write their own file; the last
    /// to finish is the one under `path`.
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
        let partial = tempfile::Builder::new()
            .prefix(".sessile-export-")
            .tempfile_in(folder)
            .map_err(Error::DumpIo)?;
        let mut out = std::io::BufWriter::new(partial);
        let n = self.export(&mut out)?;
        let partial = out
            .into_inner()
            .map_err(|e| Error::DumpIo(e.into_error()))?;
        partial.as_file().sync_all().map_err(Error::DumpIo)?;
        partial.persist(path).map_err(|e| Error::DumpIo(e.error))?;
        // The rename itself is on disk once the folder is synced (Unix; elsewhere the
        // folder cannot be opened this way, and the rename is as durable as the OS makes it).
        if let Ok(dir) = std::fs::File::open(folder) {
            let _ = dir.sync_all();
        }
        Ok(n)
    }

    /// Restores every session of the dump file read from `input` (see
    /// [`export`](Store::export)), replacing sessions under the same keys, as
    /// [`restore`](Store::restore) does, and returns how many. The dump is checked line by
    /// line as it is read: to refuse a damaged dump before writing anything, run
    /// [`check_dump`] over it first (it checks the file, not this store's limits, so a
    /// record over [`Config::max_record_size`](crate::Config::max_record_size) still
    /// stops an import midway). Nothing is flushed: call [`flush`](Store::flush) after.
    ///
    /// A dump is trusted input: it can create a session under any key and for any user.
    /// Imported into a store in use, it puts back sessions as they were dumped, including
    /// ones logged out or revoked since, and applies no per-user cap.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidDump`] for a file that is not a dump, of a version this build does
    /// not read, damaged or truncated, naming the line (the sessions before it are
    /// restored);
    /// [`Error::DumpIo`] if reading fails; the errors of [`restore`](Store::restore).
    pub fn import(&self, input: impl BufRead) -> Result<u64> {
        // Each line is checked as it is read; the writes go in batches (on Redis a batch
        // of new sessions is one round trip). A writer thread overlapping the reading was
        // slower on two cores: it took CPU from the server.
        let mut batch = Vec::with_capacity(RESTORE_BATCH);
        let read = read(input, |dump| {
            batch.push(self.prepare(&dump)?);
            if batch.len() == RESTORE_BATCH {
                self.engine.put_records(&std::mem::take(&mut batch))?;
            }
            Ok(())
        });
        // The sessions read before a damaged line are restored, as the docs say.
        let rest = self.engine.put_records(&batch);
        let count = read?;
        rest?;
        Ok(count)
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

/// How many sessions [`Store::import`] writes at a time.
const RESTORE_BATCH: usize = 256;

/// The longest line a dump may hold: a record at the decode limit, in base64, with room
/// for its JSON. A longer one is refused before it is all in memory.
const MAX_LINE: usize = 2 * DECODE_LIMIT + (64 << 10);

/// The next line of `input` (without its line end), `None` at the end.
fn next_line(input: &mut impl BufRead, number: usize) -> Result<Option<String>> {
    let mut buf = Vec::new();
    let limit = u64::try_from(MAX_LINE + 1).unwrap_or(u64::MAX);
    let read = Read::take(&mut *input, limit)
        .read_until(b'\n', &mut buf)
        .map_err(Error::DumpIo)?;
    if read == 0 {
        return Ok(None);
    }
    if buf.len() > MAX_LINE {
        return Err(invalid(format!(
            "line {number}: longer than {MAX_LINE} bytes, not a sessile dump line"
        )));
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| invalid(format!("line {number}: not UTF-8")))
}

/// Reads the dump in `input` through, checking every line, and calls `each` with each
/// session. Returns the number of sessions.
fn read(mut input: impl BufRead, mut each: impl FnMut(SessionDump) -> Result<()>) -> Result<u64> {
    let Some(first) = next_line(&mut input, 1)? else {
        return Err(invalid("empty, not a sessile dump".into()));
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
    let mut number = 1;
    loop {
        number += 1;
        let Some(line) = next_line(&mut input, number)? else {
            break;
        };
        if trailer.is_some() {
            if line.trim().is_empty() {
                continue;
            }
            return Err(invalid(format!("line {number}: data after the end line")));
        }
        if line.starts_with("{\"end\"") {
            let t: Trailer = serde_json::from_str(&line)
                .map_err(|e| invalid(format!("line {number}: bad end line: {e}")))?;
            trailer = Some(t);
            continue;
        }
        let parsed: Line = serde_json::from_str(&line)
            .map_err(|e| invalid(format!("line {number}: bad session line: {e}")))?;
        let dump = parsed
            .into_dump()
            .map_err(|e| invalid(format!("line {number}: {e}")))?;
        each(dump).map_err(|e| match e {
            Error::InvalidDump { detail } => invalid(format!("line {number}: {detail}")),
            other => other,
        })?;
        count += 1;
    }
    match trailer {
        Some(Trailer {
            end: true,
            sessions,
        }) if sessions == count => Ok(count),
        Some(Trailer { end: false, .. }) => Err(invalid(
            "damaged: its end line does not say `\"end\":true`".into(),
        )),
        Some(Trailer { sessions, .. }) => Err(invalid(format!(
            "damaged: its end line says {sessions} sessions, it holds {count}"
        ))),
        None => Err(invalid(
            "truncated: it has no end line (an export that did not finish?)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "{\"format\":\"sessile-dump\",\"version\":2}\n";

    fn detail(input: &[u8]) -> String {
        match check_dump(input) {
            Err(Error::InvalidDump { detail }) => detail,
            other => panic!("expected InvalidDump, got {other:?}"),
        }
    }

    #[test]
    fn a_line_longer_than_any_record_is_refused_before_it_is_read_whole() {
        let mut input = HEADER.as_bytes().to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        let detail = detail(&input);
        assert!(detail.starts_with("line 2: longer than"), "{detail}");
    }

    #[test]
    fn bytes_that_are_not_utf8_name_their_line() {
        let mut input = HEADER.as_bytes().to_vec();
        input.extend_from_slice(b"{\"key\":\"\xff\"}\n");
        assert_eq!(detail(&input), "line 2: not UTF-8");
    }

    #[test]
    fn an_end_line_that_does_not_say_end_is_damage() {
        let input = format!("{HEADER}{{\"end\":false,\"sessions\":0}}\n");
        assert!(detail(input.as_bytes()).contains("does not say"));
        let input = format!("{HEADER}{{\"end\":true}}\n");
        assert!(detail(input.as_bytes()).starts_with("line 2: bad end line"));
    }

    /// The backup is a private file (0600 whatever the umask), replaces the old one, and
    /// leaves no temporary file behind.
    #[cfg(unix)]
    #[test]
    fn a_backup_file_is_private_and_replaces_the_old_one() {
        use std::os::unix::fs::PermissionsExt as _;

        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::config::Config::new(dir.path().join("store"))
            .purge_thread(false)
            .open()
            .expect("open");
        store.create().expect("create");
        let file = dir.path().join("backup.jsonl");
        std::fs::write(&file, "the previous backup").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(store.export_to(&file).expect("export"), 1);
        let mode = std::fs::metadata(&file).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&file).expect("read");
        assert_eq!(check_dump(text.as_bytes()).expect("a dump"), 1);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".sessile-export-")
            })
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }
}
