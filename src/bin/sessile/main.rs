//! `sessile`: the operator's tool for a sessile session folder.
//!
//! Inspect, purge, revoke, verify, back up and benchmark a store without writing code.
//! Built only with the `cli` feature, and written against sessile's public API alone, as
//! any user of the crate would write it. Exit codes are listed in [`exit`].

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use sessile::SessionHandle;

mod bench;
mod dumpfile;
mod exit;
mod fmt;
mod inspect;
mod maintain;
mod open;

use crate::exit::CliError;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the command failed (I/O error, damaged store, bad dump file, ...)
  2  bad command line
  3  verify found problems (still there after --repair, if given)
  4  the store is open in another process (a running server)
  5  not found: no store in the folder, or no session with that handle";

/// Inspect, maintain, back up and benchmark a sessile session store.
///
/// Every command except `import` and `bench` works on an existing store and never creates
/// one. A store is a folder or a Redis URL (`redis://host:port/db`; the key namespace is
/// `SESSILE_REDIS_NAMESPACE`, default `sessile`; with `SESSILE_REDIS_CLUSTER=1` the URL is
/// a node of a Redis Cluster). Commands open the store without its
/// purge thread, so looking at a store never deletes expired sessions behind your back
/// (`purge` does that when asked). A folder is locked while a server has it open: stop
/// the server first. A Redis store is shared: commands work while servers run.
#[derive(Debug, Parser)]
#[command(name = "sessile", version, after_help = EXIT_CODES, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Counts: live and expired sessions, users, disk size, when sessions expire.
    ///
    /// A session is live while its stored expiry is in the future. Expired sessions stay on
    /// disk until the server's purge thread (or `sessile purge`) deletes them.
    #[command(after_help = EXIT_CODES)]
    Stats {
        /// The store: a folder, a Redis URL (redis://host:port/db), or `-` for the URL in
        /// SESSILE_REDIS_URL (keeps a password off the command line).
        #[arg(value_parser = open::store_arg)]
        dir: PathBuf,
        #[command(flatten)]
        output: Output,
    },
    /// Lists sessions with their handle, user, creation, last use and expiry.
    ///
    /// Live sessions only by default, oldest first. Handles identify sessions for `show`
    /// and `revoke`; they cannot be used as cookies.
    #[command(after_help = EXIT_CODES)]
    List {
        /// The store: a folder, a Redis URL (redis://host:port/db), or `-` for the URL in
        /// SESSILE_REDIS_URL (keeps a password off the command line).
        #[arg(value_parser = open::store_arg)]
        dir: PathBuf,
        /// Only sessions of this user.
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// Only sessions that have expired but are not purged yet.
        #[arg(long, conflicts_with = "all")]
        expired: bool,
        /// Live and expired sessions.
        #[arg(long)]
        all: bool,
        /// At most this many sessions.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        #[command(flatten)]
        output: Output,
    },
    /// Shows one session: its times, user, and keys with the size of each value.
    ///
    /// Values are shown only with `--values`: they may hold secrets such as CSRF tokens.
    #[command(after_help = EXIT_CODES)]
    Show {
        /// The store: a folder, a Redis URL (redis://host:port/db), or `-` for the URL in
        /// SESSILE_REDIS_URL (keeps a password off the command line).
        #[arg(value_parser = open::store_arg)]
        dir: PathBuf,
        /// The session's handle (32 hex characters, as `list` prints it).
        handle: SessionHandle,
        /// Also print each value's stored bytes (escaped text; base64 with --json).
        #[arg(long)]
        values: bool,
        #[command(flatten)]
        output: Output,
    },
    /// Deletes every expired session now, with a progress bar.
    ///
    /// The same work the server's purge thread does on its interval.
    #[command(after_help = EXIT_CODES)]
    Purge {
        /// The store: a folder, a Redis URL (redis://host:port/db), or `-` for the URL in
        /// SESSILE_REDIS_URL (keeps a password off the command line).
        #[arg(value_parser = open::store_arg)]
        dir: PathBuf,
    },
    /// Revokes sessions: all of one user's, or one by handle. Flushed to disk before exit.
    #[command(after_help = EXIT_CODES)]
    Revoke {
        /// The store: a folder, a Redis URL (redis://host:port/db), or `-` for the URL in
        /// SESSILE_REDIS_URL (keeps a password off the command line).
        #[arg(value_parser = open::store_arg)]
        dir: PathBuf,
        #[command(flatten)]
        target: RevokeTarget,
    },
    /// Checks that every record decodes and has its index entries; exits 3 on problems.
    ///
    /// With `--repair`, adds missing index entries, removes stale ones and moves
    /// undecodable records to the quarantine tree (no readable session is deleted), then
    /// checks again.
    #[command(after_help = EXIT_CODES)]
    Verify {
        /// The store: a folder, a Redis URL (redis://host:port/db), or `-` for the URL in
        /// SESSILE_REDIS_URL (keeps a password off the command line).
        #[arg(value_parser = open::store_arg)]
        dir: PathBuf,
        /// Fix what can be fixed.
        #[arg(long)]
        repair: bool,
        #[command(flatten)]
        output: Output,
    },
    /// Writes every session (live and expired) to a dump file: JSON lines, see the README.
    ///
    /// The file holds storage keys (digests), never tokens, but it does hold session data:
    /// keep it as private as the store folder.
    #[command(after_help = EXIT_CODES)]
    Export {
        /// The store: a folder, a Redis URL (redis://host:port/db), or `-` for the URL in
        /// SESSILE_REDIS_URL (keeps a password off the command line).
        #[arg(value_parser = open::store_arg)]
        dir: PathBuf,
        /// The dump file to write, or `-` for standard output.
        file: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Reads a dump file into a store, creating the folder if needed.
    ///
    /// The whole file is checked before anything is written. Cookies issued for the
    /// exported store keep working with the imported one.
    #[command(after_help = EXIT_CODES)]
    Import {
        /// The store: a folder (created if missing), a Redis URL (redis://host:port/db), or
        /// `-` for the URL in SESSILE_REDIS_URL (keeps a password off the command line).
        #[arg(value_parser = open::store_arg)]
        dir: PathBuf,
        /// The dump file to read, or `-` for standard input.
        file: PathBuf,
        /// Import into a store that already holds sessions (same key: replaced).
        #[arg(long)]
        merge: bool,
    },
    /// Measures lookup and create throughput on a temporary store, next to raw sled.
    ///
    /// Fills a fresh store in a temporary folder, times `Store::load` and `Store::create`
    /// against sled's own `get` and `insert` on the same records, prints a table and
    /// deletes the folder.
    #[command(after_help = EXIT_CODES)]
    Bench(bench::BenchArgs),
}

#[derive(Debug, Args)]
struct Output {
    /// Print JSON for scripts instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct RevokeTarget {
    /// Revoke every live session of this user.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Revoke the session with this handle.
    #[arg(long, value_name = "HANDLE")]
    handle: Option<SessionHandle>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = run(cli.command, &mut out).and_then(|code| {
        out.flush().map_err(CliError::from)?;
        Ok(code)
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            drop(out);
            e.report();
            ExitCode::from(e.code())
        }
    }
}

fn run(command: Command, out: &mut dyn Write) -> Result<u8, CliError> {
    match command {
        Command::Stats { dir, output } => inspect::stats(&dir, output.json, out),
        Command::List {
            dir,
            user,
            expired,
            all,
            limit,
            output,
        } => {
            let which = match (expired, all) {
                (true, _) => inspect::Which::Expired,
                (false, true) => inspect::Which::All,
                (false, false) => inspect::Which::Live,
            };
            let filter = inspect::ListFilter { user, which, limit };
            inspect::list(&dir, &filter, output.json, out)
        }
        Command::Show {
            dir,
            handle,
            values,
            output,
        } => inspect::show(&dir, &handle, values, output.json, out),
        Command::Purge { dir } => maintain::purge(&dir, out),
        Command::Revoke { dir, target } => match (target.user, target.handle) {
            (Some(user), _) => maintain::revoke_user(&dir, &user, out),
            (None, Some(handle)) => maintain::revoke_handle(&dir, &handle, out),
            (None, None) => Err(CliError::usage("give --user or --handle")),
        },
        Command::Verify {
            dir,
            repair,
            output,
        } => maintain::verify(&dir, repair, output.json, out),
        Command::Export { dir, file, force } => dumpfile::export(&dir, &file, force, out),
        Command::Import { dir, file, merge } => dumpfile::import(&dir, &file, merge, out),
        Command::Bench(args) => bench::run(&args, out),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
