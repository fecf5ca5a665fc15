//! Commands that change a store: `purge`, `revoke` and `verify --repair`.

use std::io::Write;
use std::path::Path;
use std::thread;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sessile::RecvError;
use sessile::{Event, SessionHandle, VerifyReport};

use crate::exit::{CliError, OK, PROBLEMS};
use crate::fmt;
use crate::inspect;
use crate::open::{self, Folder};

/// Room for every expiry event of a large purge, so the progress bar rarely misses one.
const PURGE_EVENT_CAPACITY: usize = 1 << 16;

/// A progress bar on standard error (drawn only when it is a terminal).
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(&format!(
        "{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} ({{per_sec}}, {{eta}} left)"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let bar = ProgressBar::new(len).with_style(style);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// `sessile purge DIR`.
pub fn purge(dir: &Path, out: &mut dyn Write) -> Result<u8, CliError> {
    let store = open::open(dir, Folder::Existing, |c| {
        c.event_capacity(PURGE_EVENT_CAPACITY)
    })?;
    let now = open::now_ms();
    let mut expired = 0;
    for dump in store.dump() {
        if !dump?.is_live_at(now) {
            expired += 1;
        }
    }
    // The purge reports each deletion as an event: that drives the bar.
    let events = store.subscribe();
    let progress = bar(expired, "purging");
    let worker = {
        let store = store.clone();
        thread::Builder::new()
            .name("sessile-purge".into())
            .spawn(move || store.purge_expired())?
    };
    loop {
        match events.recv_timeout(Duration::from_millis(50)) {
            Ok(Event::Expired { .. }) => progress.inc(1),
            Ok(_) => {}
            Err(RecvError::Empty) if worker.is_finished() => break,
            Err(RecvError::Empty) => {}
            Err(RecvError::Closed) | Err(_) => break,
        }
    }
    let purged = worker
        .join()
        .map_err(|_| CliError::failed("the purge thread panicked"))??;
    store.flush()?;
    progress.finish_and_clear();
    drop(store);
    writeln!(
        out,
        "purged {} expired session{} from {}",
        fmt::thousands(purged as u64),
        plural(purged as u64),
        open::shown(dir)
    )?;
    if (purged as u64) < expired {
        writeln!(
            out,
            "note: {} expired record{} had no expiry index entry and stayed; \
             `sessile verify --repair` restores the index, then purge again",
            expired - purged as u64,
            plural(expired - purged as u64)
        )?;
    }
    Ok(OK)
}

/// `sessile revoke DIR --user USER`.
pub fn revoke_user(dir: &Path, user: &str, out: &mut dyn Write) -> Result<u8, CliError> {
    let store = open::open(dir, Folder::Existing, |c| c)?;
    let revoked = store.destroy_user(user, None)?;
    store.flush()?;
    drop(store);
    writeln!(
        out,
        "revoked {revoked} live session{} of user {user:?} (written to disk)",
        plural(revoked as u64)
    )?;
    Ok(OK)
}

/// `sessile revoke DIR --handle HANDLE`.
pub fn revoke_handle(
    dir: &Path,
    handle: &SessionHandle,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    let store = open::open(dir, Folder::Existing, |c| c)?;
    let dump = inspect::find(&store, handle)?;
    let live = store.destroy_by_handle(handle)?;
    store.flush()?;
    drop(store);
    let user = dump
        .user
        .map_or(String::new(), |u| format!(" of user {u:?}"));
    if live {
        writeln!(out, "revoked session {handle}{user} (written to disk)")?;
    } else {
        writeln!(
            out,
            "session {handle}{user} had already expired; removed it (written to disk)"
        )?;
    }
    Ok(OK)
}

/// [`VerifyReport`] as `verify --json` prints it.
#[derive(Debug, Serialize)]
struct Counts {
    consistent: bool,
    records: u64,
    live: u64,
    expired: u64,
    undecodable: u64,
    missing_expiry_entries: u64,
    missing_user_entries: u64,
    stale_expiry_entries: u64,
    stale_user_entries: u64,
    quarantined: u64,
}

impl From<&VerifyReport> for Counts {
    fn from(r: &VerifyReport) -> Counts {
        Counts {
            consistent: r.is_consistent(),
            records: r.records,
            live: r.live,
            expired: r.expired,
            undecodable: r.undecodable,
            missing_expiry_entries: r.missing_expiry_entries,
            missing_user_entries: r.missing_user_entries,
            stale_expiry_entries: r.stale_expiry_entries,
            stale_user_entries: r.stale_user_entries,
            quarantined: r.quarantined,
        }
    }
}

#[derive(Debug, Serialize)]
struct VerifyOutput {
    path: String,
    /// Whether the store is consistent now (after the repair, with `--repair`).
    consistent: bool,
    /// What the check found (before any repair).
    found: Counts,
    /// What a second check found after `--repair`.
    #[serde(skip_serializing_if = "Option::is_none")]
    after_repair: Option<Counts>,
    /// On Redis, the server's `maxmemory-policy` if it may evict sessions; else `null`.
    eviction_policy: Option<String>,
}

/// `sessile verify DIR [--repair]`.
pub fn verify(dir: &Path, repair: bool, json: bool, out: &mut dyn Write) -> Result<u8, CliError> {
    let store = open::open(dir, Folder::Existing, |c| c)?;
    let found = store.verify(repair)?;
    let after = if repair {
        Some(store.verify(false)?)
    } else {
        None
    };
    drop(store);
    let consistent = after.as_ref().unwrap_or(&found).is_consistent();
    let code = if consistent { OK } else { PROBLEMS };
    if json {
        let output = VerifyOutput {
            path: open::shown(dir),
            consistent,
            found: Counts::from(&found),
            after_repair: after.as_ref().map(Counts::from),
            eviction_policy: found.eviction_policy.clone(),
        };
        serde_json::to_writer_pretty(&mut *out, &output)?;
        writeln!(out)?;
        return Ok(code);
    }
    let problems =
        |r: &VerifyReport| r.undecodable + r.missing_expiry_entries + r.missing_user_entries;
    let r = &found;
    fmt::fields(
        out,
        &[
            (
                "records",
                format!("{} ({} live, {} expired)", r.records, r.live, r.expired),
            ),
            ("undecodable records", r.undecodable.to_string()),
            (
                "missing expiry entries",
                r.missing_expiry_entries.to_string(),
            ),
            ("missing user entries", r.missing_user_entries.to_string()),
            (
                "stale expiry entries",
                format!("{} (harmless)", r.stale_expiry_entries),
            ),
            (
                "stale user entries",
                format!("{} (harmless)", r.stale_user_entries),
            ),
            ("quarantined records", r.quarantined.to_string()),
        ],
    )?;
    writeln!(out)?;
    if let Some(policy) = &found.eviction_policy {
        writeln!(
            out,
            "warning: the Redis server's maxmemory-policy is {}: it may evict sessions \
             and user sets (revoke-all would miss sessions); set noeviction",
            crate::fmt::text(policy)
        )?;
    }
    match (&after, consistent) {
        (None, true) => writeln!(out, "ok: the store is consistent")?,
        (None, false) => {
            let n = problems(r);
            writeln!(
                out,
                "{n} problem{} found; `sessile verify --repair {}` fixes {}",
                plural(n),
                if open::redis_url(dir).is_some() {
                    "URL".to_owned()
                } else {
                    open::shown(dir)
                },
                if n == 1 { "it" } else { "them" }
            )?;
        }
        (Some(_), true) => {
            let n = problems(r);
            if n == 0 && r.stale_expiry_entries + r.stale_user_entries == 0 {
                writeln!(out, "ok: the store is consistent; nothing to repair")?;
            } else {
                let stale = r.stale_expiry_entries + r.stale_user_entries;
                let also = match stale {
                    0 => String::new(),
                    1 => " and removed 1 stale index entry".to_string(),
                    _ => format!(" and removed {stale} stale index entries"),
                };
                writeln!(
                    out,
                    "repaired {n} problem{}{also}; the store is consistent now",
                    plural(n)
                )?;
            }
            if r.undecodable > 0 {
                writeln!(
                    out,
                    "{} undecodable record{} moved to the quarantine tree",
                    r.undecodable,
                    plural(r.undecodable)
                )?;
            }
        }
        (Some(a), false) => writeln!(
            out,
            "the repair did not fix everything: {} problem{} remain",
            problems(a),
            plural(problems(a))
        )?,
    }
    Ok(code)
}

/// `"s"` unless `n` is one.
pub fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}
