//! Read-only commands: `stats`, `list` and `show`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use serde::Serialize;
use sessile::{SessionDump, SessionHandle, Store};

use crate::exit::{CliError, OK};
use crate::fmt::{self, Align};
use crate::open::{self, Folder};

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;
const WEEK_MS: u64 = 7 * DAY_MS;

/// What `stats` prints.
#[derive(Debug, Default, Serialize)]
struct StatsReport {
    path: String,
    format_version: u32,
    /// `null` for a store on Redis.
    disk_bytes: Option<u64>,
    /// On Redis, the server's `maxmemory-policy` if it may evict sessions; else `null`.
    eviction_policy: Option<String>,
    records: u64,
    live: u64,
    expired: u64,
    users: u64,
    live_with_user: u64,
    value_bytes: u64,
    expiring: Expiring,
}

/// Live sessions by when they expire; the buckets do not overlap.
#[derive(Debug, Default, Serialize)]
struct Expiring {
    /// Within the next hour.
    within_hour: u64,
    /// In one hour to one day.
    within_day: u64,
    /// In one day to one week.
    within_week: u64,
    /// In more than a week.
    later: u64,
}

/// `sessile stats DIR`.
pub fn stats(dir: &Path, json: bool, out: &mut dyn Write) -> Result<u8, CliError> {
    let store = open::open(dir, Folder::Existing, |c| c)?;
    let now = open::now_ms();
    let mut report = StatsReport {
        path: open::shown(dir),
        format_version: store.format_version(),
        ..StatsReport::default()
    };
    let mut users = BTreeSet::new();
    for dump in store.dump() {
        let dump = dump?;
        report.records += 1;
        if !dump.is_live_at(now) {
            report.expired += 1;
            continue;
        }
        report.live += 1;
        report.value_bytes += dump.values.values().map(|v| v.len() as u64).sum::<u64>();
        if let Some(user) = dump.user {
            report.live_with_user += 1;
            users.insert(user);
        }
        let left = dump.expires_at - now;
        let bucket = match left {
            l if l <= HOUR_MS => &mut report.expiring.within_hour,
            l if l <= DAY_MS => &mut report.expiring.within_day,
            l if l <= WEEK_MS => &mut report.expiring.within_week,
            _ => &mut report.expiring.later,
        };
        *bucket += 1;
    }
    report.users = users.len() as u64;
    report.eviction_policy = store.eviction_policy()?;
    drop(store);
    report.disk_bytes = match open::redis_url(dir) {
        Some(_) => None,
        None => Some(folder_size(dir)?),
    };

    if json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
        return Ok(OK);
    }
    let e = &report.expiring;
    let per_session = report
        .value_bytes
        .checked_div(report.live)
        .map_or(String::new(), |avg| format!(", {avg} B per session"));
    fmt::fields(
        out,
        &[
            ("store", report.path.clone()),
            ("format version", report.format_version.to_string()),
            (
                "disk size",
                match report.disk_bytes {
                    Some(bytes) => format!("{} ({bytes} bytes)", fmt::size(bytes)),
                    None => "on Redis (see the server's INFO memory)".into(),
                },
            ),
            ("live sessions", fmt::thousands(report.live)),
            (
                "expired, not purged",
                format!(
                    "{}{}",
                    fmt::thousands(report.expired),
                    if report.expired > 0 {
                        " (deleted by the server's purge thread, or `sessile purge`)"
                    } else {
                        ""
                    }
                ),
            ),
            (
                "users",
                format!(
                    "{} ({} live session{} {} a user)",
                    fmt::thousands(report.users),
                    fmt::thousands(report.live_with_user),
                    if report.live_with_user == 1 { "" } else { "s" },
                    if report.live_with_user == 1 {
                        "has"
                    } else {
                        "have"
                    },
                ),
            ),
            (
                "stored values",
                format!("{}{per_session}", fmt::size(report.value_bytes)),
            ),
            (
                "live sessions expiring",
                format!(
                    "within 1h: {}, 1h-1d: {}, 1d-1w: {}, later: {}",
                    e.within_hour, e.within_day, e.within_week, e.later
                ),
            ),
        ],
    )?;
    if let Some(policy) = &report.eviction_policy {
        writeln!(
            out,
            "\nwarning: the Redis server's maxmemory-policy is {}: it may evict sessions and \
             user sets (revoke-all would miss sessions); set noeviction",
            fmt::text(policy)
        )?;
    }
    Ok(OK)
}

/// Total size of the regular files under `dir`.
fn folder_size(dir: &Path) -> Result<u64, CliError> {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries =
            std::fs::read_dir(&folder).map_err(|e| CliError::from(e).context(folder.display()))?;
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

/// Which sessions `list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Live,
    Expired,
    All,
}

/// The options of `list`.
#[derive(Debug)]
pub struct ListFilter {
    pub user: Option<String>,
    pub which: Which,
    pub limit: Option<usize>,
}

/// One session's metadata, as `list` and `show` print it.
#[derive(Debug, Serialize)]
struct Summary {
    handle: String,
    user: Option<String>,
    live: bool,
    created_at: String,
    last_seen: String,
    expires_at: String,
    created_at_ms: u64,
    last_seen_ms: u64,
    expires_at_ms: u64,
    version: u64,
    keys: usize,
    value_bytes: u64,
    /// The session's own timeouts in ms; `null`: the server's.
    idle_timeout_ms: Option<u64>,
    absolute_timeout_ms: Option<u64>,
}

impl Summary {
    fn of(dump: &SessionDump, now: u64) -> Result<Summary, CliError> {
        Ok(Summary {
            handle: dump.handle()?.to_string(),
            user: dump.user.clone(),
            live: dump.is_live_at(now),
            created_at: fmt::timestamp(dump.created_at),
            last_seen: fmt::timestamp(dump.last_seen),
            expires_at: fmt::timestamp(dump.expires_at),
            created_at_ms: dump.created_at,
            last_seen_ms: dump.last_seen,
            expires_at_ms: dump.expires_at,
            version: dump.version,
            keys: dump.values.len(),
            value_bytes: dump.values.values().map(|v| v.len() as u64).sum(),
            idle_timeout_ms: dump.idle_timeout_ms,
            absolute_timeout_ms: dump.absolute_timeout_ms,
        })
    }

    /// The session's own timeouts, e.g. `idle 30d, absolute 400d`, or `server's`.
    fn timeouts(&self) -> String {
        timeouts(self.idle_timeout_ms, self.absolute_timeout_ms)
    }
}

/// A session's own timeouts for people: each that is set, or `server's` if none is.
fn timeouts(idle: Option<u64>, absolute: Option<u64>) -> String {
    let parts: Vec<String> = [("idle", idle), ("absolute", absolute)]
        .into_iter()
        .filter_map(|(what, ms)| ms.map(|ms| format!("{what} {}", fmt::duration(ms))))
        .collect();
    if parts.is_empty() {
        "server's".to_owned()
    } else {
        parts.join(", ")
    }
}

/// `sessile list DIR`.
pub fn list(
    dir: &Path,
    filter: &ListFilter,
    json: bool,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    let store = open::open(dir, Folder::Existing, |c| c)?;
    let now = open::now_ms();
    let mut rows = Vec::new();
    for dump in store.dump() {
        let dump = dump?;
        let live = dump.is_live_at(now);
        let wanted = match filter.which {
            Which::Live => live,
            Which::Expired => !live,
            Which::All => true,
        };
        if wanted && (filter.user.is_none() || dump.user == filter.user) {
            rows.push(Summary::of(&dump, now)?);
        }
    }
    drop(store);
    rows.sort_by(|a, b| (a.created_at_ms, &a.handle).cmp(&(b.created_at_ms, &b.handle)));
    if let Some(limit) = filter.limit {
        rows.truncate(limit);
    }
    if json {
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        writeln!(out)?;
        return Ok(OK);
    }
    if rows.is_empty() {
        writeln!(out, "no sessions")?;
        return Ok(OK);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.handle.clone(),
                r.user.as_deref().map_or_else(|| "-".into(), fmt::text),
                r.created_at.clone(),
                fmt::relative(r.last_seen_ms, now),
                if r.live {
                    fmt::relative(r.expires_at_ms, now)
                } else {
                    format!("expired {}", fmt::relative(r.expires_at_ms, now))
                },
                r.keys.to_string(),
                fmt::size(r.value_bytes),
                r.timeouts(),
            ]
        })
        .collect();
    use Align::{Left, Right};
    fmt::table(
        out,
        &[
            "HANDLE",
            "USER",
            "CREATED",
            "LAST SEEN",
            "EXPIRES",
            "KEYS",
            "SIZE",
            "TIMEOUTS",
        ],
        &[Left, Left, Left, Right, Right, Right, Right, Left],
        &table,
    )?;
    Ok(OK)
}

/// What `show --json` prints.
#[derive(Debug, Serialize)]
struct Detail {
    #[serde(flatten)]
    summary: Summary,
    values: Vec<Value>,
}

#[derive(Debug, Serialize)]
struct Value {
    key: String,
    size: usize,
    /// The stored bytes, URL-safe base64 without padding; only with `--values`.
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<String>,
}

/// `sessile show DIR HANDLE`.
pub fn show(
    dir: &Path,
    handle: &SessionHandle,
    values: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    let store = open::open(dir, Folder::Existing, |c| c)?;
    let dump = find(&store, handle)?;
    drop(store);
    let now = open::now_ms();
    if json {
        use base64::Engine as _;
        let detail = Detail {
            summary: Summary::of(&dump, now)?,
            values: dump
                .values
                .iter()
                .map(|(key, v)| Value {
                    key: key.clone(),
                    size: v.len(),
                    bytes: values
                        .then(|| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)),
                })
                .collect(),
        };
        serde_json::to_writer_pretty(&mut *out, &detail)?;
        writeln!(out)?;
        return Ok(OK);
    }
    let state = if dump.is_live_at(now) {
        format!("live, expires {}", fmt::relative(dump.expires_at, now))
    } else {
        format!(
            "expired {} (not purged yet)",
            fmt::relative(dump.expires_at, now)
        )
    };
    let at = |ms: u64| format!("{} ({})", fmt::timestamp(ms), fmt::relative(ms, now));
    let total: u64 = dump.values.values().map(|v| v.len() as u64).sum();
    fmt::fields(
        out,
        &[
            ("handle", handle.to_string()),
            ("state", state),
            (
                "user",
                dump.user.as_deref().map_or_else(|| "-".into(), fmt::text),
            ),
            ("created", at(dump.created_at)),
            ("last seen", at(dump.last_seen)),
            ("expires", at(dump.expires_at)),
            ("version", dump.version.to_string()),
            (
                "timeouts",
                timeouts(dump.idle_timeout_ms, dump.absolute_timeout_ms),
            ),
            (
                "values",
                format!("{} keys, {}", dump.values.len(), fmt::size(total)),
            ),
        ],
    )?;
    if !dump.values.is_empty() {
        writeln!(out)?;
        let mut headers = vec!["KEY", "SIZE"];
        if values {
            headers.push("STORED BYTES (escaped)");
        }
        let rows: Vec<Vec<String>> = dump
            .values
            .iter()
            .map(|(key, v)| {
                let mut row = vec![fmt::text(key), format!("{} B", v.len())];
                if values {
                    row.push(format!("\"{}\"", v.escape_ascii()));
                }
                row
            })
            .collect();
        fmt::table(
            out,
            &headers,
            &[Align::Left, Align::Right, Align::Left],
            &rows,
        )?;
    }
    Ok(OK)
}

/// The session with `handle`, or a not-found error.
pub fn find(store: &Store, handle: &SessionHandle) -> Result<SessionDump, CliError> {
    store.inspect(handle)?.ok_or_else(|| {
        CliError::not_found(format!("no session with handle {handle}"))
            .hint("`sessile list DIR --all` shows the handles of stored sessions")
    })
}
