//! `bench`: lookup and create throughput of sessile next to raw sled, on the same records.

use std::io::Write;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sessile::{Config, SessionId, Store};

use crate::exit::{CliError, OK};
use crate::fmt::{self, Align};
use crate::maintain::bar;
use crate::open::LARGEST_RECORD;

/// sessile's default page cache, given to raw sled too so both read from the same memory.
const SLED_CACHE_BYTES: u64 = 64 << 20;

/// The options of `sessile bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Sessions to create (and to look up at random).
    #[arg(long, value_name = "N", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    sessions: u64,
    /// Threads for lookups and creates [default: the number of CPUs].
    #[arg(long, value_name = "T", value_parser = clap::value_parser!(u64).range(1..=1024))]
    threads: Option<u64>,
    /// Seconds each lookup measurement runs.
    #[arg(long, value_name = "S", default_value_t = 3.0, value_parser = parse_seconds)]
    seconds: f64,
    /// Bytes of data stored in each session.
    #[arg(long, value_name = "B", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(0..=(LARGEST_RECORD as u64 - 4096)))]
    value_size: u64,
    /// Where to make the temporary store [default: the system's temporary folder].
    #[arg(long, value_name = "DIR")]
    tmp_dir: Option<PathBuf>,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 3600.0 => Ok(v),
        Ok(_) => Err("expected a number of seconds above 0 and at most 3600".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// One measured rate.
#[derive(Debug, Clone, Copy)]
struct Rate {
    ops: u64,
    elapsed: Duration,
}

impl Rate {
    fn per_sec(self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `sessile bench`.
pub fn run(args: &BenchArgs, out: &mut dyn Write) -> Result<u8, CliError> {
    let threads = match args.threads {
        Some(t) => usize::try_from(t).unwrap_or(1),
        None => thread::available_parallelism().map_or(1, usize::from),
    };
    let n = usize::try_from(args.sessions)
        .map_err(|_| CliError::usage("--sessions is too large for this machine"))?;
    let value_size = usize::try_from(args.value_size)
        .map_err(|_| CliError::usage("--value-size is too large for this machine"))?;
    let mut builder = tempfile::Builder::new();
    builder.prefix("sessile-bench-");
    let tmp = match &args.tmp_dir {
        Some(dir) => builder.tempdir_in(dir),
        None => builder.tempdir(),
    }
    .map_err(|e| CliError::from(e).context("making the temporary folder"))?;
    let path = tmp.path().join("store");
    writeln!(
        out,
        "sessile bench: {} sessions with a {value_size}-byte value, {threads} thread{}, {} s per lookup run",
        fmt::thousands(args.sessions),
        if threads == 1 { "" } else { "s" },
        args.seconds
    )?;
    writeln!(
        out,
        "temporary store: {} (deleted afterwards)",
        path.display()
    )?;
    writeln!(out)?;
    out.flush()?;

    let store = Config::new(&path)
        .purge_thread(false)
        .max_record_size(LARGEST_RECORD)
        .storage_cache_bytes(SLED_CACHE_BYTES)
        .open()?;
    let progress = bar(args.sessions, "filling");
    let (ids, create) = fill(&store, n, value_size, threads, &progress)?;
    progress.finish_and_clear();

    let lookup = measure("Store::load", threads, args.seconds, |i| {
        Ok(store.load(&ids[i % ids.len()])?.is_some())
    })?;
    let hot_lookup = measure("Store::load, hot", threads, args.seconds, |i| {
        Ok(store.load(&ids[hot(i, ids.len())])?.is_some())
    })?;
    let mut keys = Vec::with_capacity(n);
    for dump in store.dump() {
        let key = URL_SAFE_NO_PAD
            .decode(dump?.key)
            .map_err(|e| CliError::failed(format!("a dumped key is not base64: {e}")))?;
        keys.push(key);
    }
    store.flush()?;
    drop(store);

    // The same folder, opened with sled alone: the same records under the same keys.
    let db = sled::Config::new()
        .path(&path)
        .cache_capacity(SLED_CACHE_BYTES)
        .open()
        .map_err(sled_error)?;
    let sessions = db.open_tree("sessions").map_err(sled_error)?;
    let raw_get = measure("sled Tree::get", threads, args.seconds, |i| {
        Ok(sessions
            .get(&keys[i % keys.len()])
            .map_err(sled_error)?
            .is_some())
    })?;
    let hot_raw_get = measure("sled Tree::get, hot", threads, args.seconds, |i| {
        Ok(sessions
            .get(&keys[hot(i, keys.len())])
            .map_err(sled_error)?
            .is_some())
    })?;
    let records = sessions
        .iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(sled_error)?;
    let fresh = db.open_tree("bench_raw_insert").map_err(sled_error)?;
    let raw_insert = timed_parallel(&records, threads, |(k, v)| {
        fresh.insert(k, v).map(drop).map_err(sled_error)
    })?;
    drop((fresh, sessions, db));
    tmp.close()
        .map_err(|e| CliError::from(e).context("deleting the temporary store"))?;

    let row = |op: &str, how: &str, rate: Rate, base: Rate| {
        let per_sec = rate.per_sec();
        vec![
            op.to_string(),
            how.to_string(),
            fmt::thousands(per_sec.round() as u64),
            format!("{:.2}", threads as f64 * 1e6 / per_sec.max(1e-9)),
            format!("{:.2}x", per_sec / base.per_sec().max(1e-9)),
        ]
    };
    let rows = vec![
        row(
            "lookup, uniform",
            "Store::load (decode, expiry check)",
            lookup,
            raw_get,
        ),
        row("lookup, uniform", "sled Tree::get (raw)", raw_get, raw_get),
        row(
            "lookup, hot",
            "Store::load (read cache)",
            hot_lookup,
            hot_raw_get,
        ),
        row(
            "lookup, hot",
            "sled Tree::get (raw)",
            hot_raw_get,
            hot_raw_get,
        ),
        row(
            "create",
            "Store::create + insert + save",
            create,
            raw_insert,
        ),
        row(
            "create",
            "sled Tree::insert of the record (raw)",
            raw_insert,
            raw_insert,
        ),
    ];
    fmt::table(
        out,
        &["OP", "HOW", "OPS/S", "µs/OP/THREAD", "VS RAW SLED"],
        &[
            Align::Left,
            Align::Left,
            Align::Right,
            Align::Right,
            Align::Right,
        ],
        &rows,
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "uniform lookups pick sessions at random, hot ones send 99% of the lookups to 1% of \
         the sessions; a create here is Store::create then Store::save, each writing the \
         record and its expiry index entry; the raw insert is one write"
    )?;
    Ok(OK)
}

fn sled_error(e: sled::Error) -> CliError {
    CliError::failed(format!("sled: {e}"))
}

/// Creates `n` sessions with one value each, over `threads` threads.
fn fill(
    store: &Store,
    n: usize,
    value_size: usize,
    threads: usize,
    progress: &ProgressBar,
) -> Result<(Vec<SessionId>, Rate), CliError> {
    let mut rng = SplitMix(0x5e55_11e5);
    let value: Vec<u8> = (0..value_size).map(|_| rng.next() as u8).collect();
    let start = Instant::now();
    let parts = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let share = n / threads + usize::from(t < n % threads);
                let value = &value;
                s.spawn(move || -> Result<Vec<SessionId>, CliError> {
                    let mut ids = Vec::with_capacity(share);
                    for _ in 0..share {
                        let mut session = store.create()?;
                        session.insert_bytes("data", value.clone())?;
                        store.save(&session)?;
                        ids.push(session.id().clone());
                        progress.inc(1);
                    }
                    Ok(ids)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| CliError::failed("a benchmark thread panicked"))?
            })
            .collect::<Result<Vec<_>, CliError>>()
    })?;
    let elapsed = start.elapsed();
    let ids: Vec<SessionId> = parts.into_iter().flatten().collect();
    let rate = Rate {
        ops: ids.len() as u64,
        elapsed,
    };
    Ok((ids, rate))
}

/// Runs `op` with random indexes on `threads` threads for `seconds`. `op` returns whether
/// it found what it looked for; a miss is an error.
fn measure(
    name: &str,
    threads: usize,
    seconds: f64,
    op: impl Fn(usize) -> Result<bool, CliError> + Sync,
) -> Result<Rate, CliError> {
    let spinner = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.set_message(format!("measuring {name}"));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let run_for = Duration::from_secs_f64(seconds);
    let op = &op;
    let results = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> Result<(u64, Duration), CliError> {
                    let mut rng = SplitMix(0x9e37_79b9 ^ ((t as u64) << 32));
                    let start = Instant::now();
                    let mut ops = 0u64;
                    loop {
                        for _ in 0..256 {
                            // The remainder keeps the index in range for any length.
                            let i = usize::try_from(rng.next() >> 1).unwrap_or(0);
                            if !op(i)? {
                                return Err(CliError::failed(format!(
                                    "{name} missed a record that was just written"
                                )));
                            }
                            ops += 1;
                        }
                        if start.elapsed() >= run_for {
                            return Ok((ops, start.elapsed()));
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| CliError::failed("a benchmark thread panicked"))?
            })
            .collect::<Result<Vec<_>, CliError>>()
    });
    spinner.finish_and_clear();
    let results = results?;
    Ok(Rate {
        ops: results.iter().map(|(ops, _)| ops).sum(),
        elapsed: results
            .iter()
            .map(|(_, e)| *e)
            .max()
            .unwrap_or(Duration::ZERO),
    })
}

/// Runs `op` on every item, split over `threads` threads, and times it.
fn timed_parallel<T: Sync>(
    items: &[T],
    threads: usize,
    op: impl Fn(&T) -> Result<(), CliError> + Sync,
) -> Result<Rate, CliError> {
    let chunk = items.len().div_ceil(threads.max(1)).max(1);
    let op = &op;
    let start = Instant::now();
    thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().try_for_each(op)))
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .map_err(|_| CliError::failed("a benchmark thread panicked"))?
        })
    })?;
    Ok(Rate {
        ops: items.len() as u64,
        elapsed: start.elapsed(),
    })
}

/// Maps a random `i` to an index into `0..n`, 99% of the picks on the first 1%.
fn hot(i: usize, n: usize) -> usize {
    let few = (n / 100).max(1);
    let j = i / 100;
    if i % 100 < 99 { j % few } else { j % n }
}

/// SplitMix64: a fast, good-enough generator for picking records at random.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
