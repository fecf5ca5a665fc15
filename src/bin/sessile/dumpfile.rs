//! `export` and `import`: the dump file format, version 2 (version 1 is read too).
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
//! epoch (integers up to 2^64-1). Readers ignore header fields they do not know; any other
//! change to the format gets a new `version`, and readers refuse versions they do not know.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sessile::SessionDump;

use crate::exit::{CliError, OK};
use crate::fmt;
use crate::maintain::{bar, plural};
use crate::open::{self, Folder};

/// The `format` of every dump header.
const FORMAT: &str = "sessile-dump";
/// The dump format version this build writes.
const VERSION: u32 = 2;
/// The dump format versions this build reads: 1 is 2 without per-session timeouts.
const READS: [u32; 2] = [1, 2];

#[derive(Debug, Serialize, Deserialize)]
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

#[derive(Debug, Serialize, Deserialize)]
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

#[derive(Debug, Serialize, Deserialize)]
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

    fn to_dump(&self) -> Result<SessionDump, String> {
        let mut dump = SessionDump::new(self.key.clone())
            .map_err(|_| format!("key {:?} is not a 32-byte session key", self.key))?;
        for (k, v) in &self.values {
            let bytes = URL_SAFE_NO_PAD
                .decode(v)
                .map_err(|e| format!("the value of {k:?} is not URL-safe base64: {e}"))?;
            dump.values.insert(k.clone(), bytes);
        }
        dump.created_at = self.created_at;
        dump.last_seen = self.last_seen;
        dump.expires_at = self.expires_at;
        dump.version = self.version;
        dump.user = self.user.clone();
        dump.idle_timeout_ms = self.idle_timeout_ms;
        dump.absolute_timeout_ms = self.absolute_timeout_ms;
        Ok(dump)
    }
}

/// `sessile export DIR FILE`.
pub fn export(dir: &Path, file: &Path, force: bool, out: &mut dyn Write) -> Result<u8, CliError> {
    let store = open::open(dir, Folder::Existing, |c| c)?;
    let to_stdout = file == Path::new("-");
    if !to_stdout && !force && file.exists() {
        return Err(
            CliError::failed(format!("{} already exists", file.display()))
                .hint("pass --force to replace it, or choose another file name"),
        );
    }
    let progress = spinner("exporting");
    let write_all = |w: &mut dyn Write| -> Result<u64, CliError> {
        let header = Header {
            format: FORMAT.into(),
            version: VERSION,
            store_format: Some(store.format_version()),
            sessile: Some(env!("CARGO_PKG_VERSION").into()),
            exported_at: Some(open::now_ms()),
        };
        serde_json::to_writer(&mut *w, &header)?;
        w.write_all(b"\n")?;
        let mut n = 0;
        for dump in store.dump() {
            serde_json::to_writer(&mut *w, &Line::of(&dump?))?;
            w.write_all(b"\n")?;
            n += 1;
            progress.inc(1);
        }
        serde_json::to_writer(
            &mut *w,
            &Trailer {
                end: true,
                sessions: n,
            },
        )?;
        w.write_all(b"\n")?;
        w.flush()?;
        Ok(n)
    };
    let n = if to_stdout {
        let mut w = BufWriter::new(io::stdout().lock());
        write_all(&mut w)?
    } else {
        // Write next to the target and rename at the end: an interrupted export never
        // leaves a half-written file under the name a restore would use.
        let folder = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".sessile-export-")
            .tempfile_in(&folder)
            .map_err(|e| CliError::from(e).context(folder.display()))?;
        let mut w = BufWriter::new(tmp);
        let n = write_all(&mut w)?;
        let tmp = w.into_inner().map_err(|e| CliError::from(e.into_error()))?;
        tmp.as_file().sync_all()?;
        let persisted = if force {
            tmp.persist(file)
        } else {
            tmp.persist_noclobber(file)
        };
        persisted.map_err(|e| CliError::from(e.error).context(file.display()))?;
        n
    };
    progress.finish_and_clear();
    drop(store);
    if !to_stdout {
        writeln!(
            out,
            "exported {} session{} from {} to {}",
            fmt::thousands(n),
            plural(n),
            open::shown(dir),
            file.display()
        )?;
    }
    Ok(OK)
}

fn spinner(what: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(&format!(
        "{{spinner}} {what}: {{pos}} sessions ({{per_sec}})"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bar = ProgressBar::new_spinner().with_style(style);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// Reads the dump in `reader` through, checking every line, and calls `each` with each
/// session. Returns the number of sessions.
fn read_dump(
    reader: impl BufRead,
    name: &str,
    mut each: impl FnMut(SessionDump) -> Result<(), CliError>,
) -> Result<u64, CliError> {
    let at = |line: usize| format!("{name}, line {line}");
    let mut lines = reader.lines();
    let first = match lines.next() {
        Some(line) => line.map_err(|e| CliError::from(e).context(at(1)))?,
        None => {
            return Err(CliError::failed(format!(
                "{name} is empty, not a sessile dump"
            )));
        }
    };
    let header: Header = serde_json::from_str(&first)
        .map_err(|e| CliError::failed(format!("{}: not a sessile dump header: {e}", at(1))))?;
    if header.format != FORMAT {
        return Err(CliError::failed(format!(
            "{}: format is {:?}, expected {FORMAT:?}",
            at(1),
            header.format
        )));
    }
    if !READS.contains(&header.version) {
        return Err(CliError::failed(format!(
            "{name} is a version {} dump; this sessile reads versions {READS:?}",
            header.version
        ))
        .hint("import it with the sessile release that wrote it, or a newer one"));
    }
    let mut count = 0u64;
    let mut trailer = None;
    for (i, line) in lines.enumerate() {
        let number = i + 2;
        let line = line.map_err(|e| CliError::from(e).context(at(number)))?;
        if trailer.is_some() {
            if line.trim().is_empty() {
                continue;
            }
            return Err(CliError::failed(format!(
                "{}: data after the end line",
                at(number)
            )));
        }
        let value: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| CliError::failed(format!("{}: not JSON: {e}", at(number))))?;
        if value.get("end").is_some() {
            let t: Trailer = serde_json::from_value(value)
                .map_err(|e| CliError::failed(format!("{}: bad end line: {e}", at(number))))?;
            trailer = Some(t);
            continue;
        }
        let parsed: Line = serde_json::from_value(value)
            .map_err(|e| CliError::failed(format!("{}: bad session line: {e}", at(number))))?;
        let dump = parsed
            .to_dump()
            .map_err(|e| CliError::failed(format!("{}: {e}", at(number))))?;
        each(dump).map_err(|e| e.context(at(number)))?;
        count += 1;
    }
    match trailer {
        Some(Trailer {
            end: true,
            sessions,
        }) if sessions == count => Ok(count),
        Some(Trailer { sessions, .. }) => Err(CliError::failed(format!(
            "{name} is damaged: its end line says {sessions} sessions, it holds {count}"
        ))),
        None => Err(CliError::failed(format!(
            "{name} is truncated: it has no end line (an export that did not finish?)"
        ))),
    }
}

/// `sessile import DIR FILE`.
pub fn import(dir: &Path, file: &Path, merge: bool, out: &mut dyn Write) -> Result<u8, CliError> {
    let (mut source, name) = if file == Path::new("-") {
        // Standard input can be read only once: keep a copy to check it before writing.
        let mut copy = tempfile::tempfile()?;
        io::copy(&mut io::stdin().lock(), &mut copy)?;
        // The copy is read from its start, not from where the writes left it.
        copy.rewind()?;
        (copy, "standard input".to_string())
    } else {
        let f = File::open(file).map_err(|e| CliError::from(e).context(file.display()))?;
        (f, file.display().to_string())
    };

    // Check the whole file before touching the store.
    let total = read_dump(BufReader::new(&mut source), &name, |_| Ok(()))?;
    source.rewind()?;

    let store = open::open(dir, Folder::CreateIfMissing, |c| c)?;
    if !merge && let Some(first) = store.dump().next() {
        first?;
        return Err(
            CliError::failed(format!("{} already holds sessions", open::shown(dir))).hint(
                "import into a new or empty folder, or pass --merge \
                 (sessions with the same key are replaced)",
            ),
        );
    }
    let progress = bar(total, "importing");
    let imported = read_dump(BufReader::new(&mut source), &name, |dump| {
        store.restore(&dump)?;
        progress.inc(1);
        Ok(())
    })?;
    store.flush()?;
    progress.finish_and_clear();
    drop(store);
    writeln!(
        out,
        "imported {} session{} into {}",
        fmt::thousands(imported),
        plural(imported),
        open::shown(dir)
    )?;
    Ok(OK)
}
