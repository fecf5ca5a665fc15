//! Exit codes and errors a person can act on.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the command failed (I/O error, damaged store, bad dump file, ...) |
//! | 2 | bad command line (clap's own code) |
//! | 3 | `verify` found problems (still there after `--repair`, if given) |
//! | 4 | the store is open in another process, such as a running server |
//! | 5 | not found: no store in the folder, or no session with that handle |

use std::fmt;
use std::io::{self, Write as _};

/// Success.
pub const OK: u8 = 0;
/// The command failed.
pub const FAILED: u8 = 1;
/// Bad command line.
pub const USAGE: u8 = 2;
/// `verify` found problems.
pub const PROBLEMS: u8 = 3;
/// The store is locked by another process.
pub const LOCKED: u8 = 4;
/// No store, or no such session.
pub const NOT_FOUND: u8 = 5;

/// An error to print on standard error, with a hint on what to do and an exit code.
#[derive(Debug)]
pub struct CliError {
    code: u8,
    message: String,
    hint: Option<String>,
    broken_pipe: bool,
}

impl CliError {
    /// A failure (exit code 1).
    pub fn failed(message: impl Into<String>) -> CliError {
        CliError::with_code(FAILED, message)
    }

    /// A bad command line (exit code 2).
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::with_code(USAGE, message)
    }

    /// Something named on the command line does not exist (exit code 5).
    pub fn not_found(message: impl Into<String>) -> CliError {
        CliError::with_code(NOT_FOUND, message)
    }

    /// An error with this exit code.
    pub fn with_code(code: u8, message: impl Into<String>) -> CliError {
        CliError {
            code,
            message: message.into(),
            hint: None,
            broken_pipe: false,
        }
    }

    /// Adds what the person can do about it.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }

    /// Prefixes the message with where it happened.
    #[must_use]
    pub fn context(mut self, context: impl fmt::Display) -> CliError {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The process exit code.
    pub fn code(&self) -> u8 {
        self.code
    }

    /// Whether standard output was closed by its reader (`sessile list | head`), which is
    /// not worth a message.
    pub fn is_broken_pipe(&self) -> bool {
        self.broken_pipe
    }

    /// Prints the error and its hint on standard error.
    pub fn report(&self) {
        let mut err = io::stderr().lock();
        // Nothing sensible is left to do if standard error is gone.
        let _ = writeln!(err, "error: {}", self.message);
        if let Some(hint) = &self.hint {
            let _ = writeln!(err, "hint: {hint}");
        }
    }
}

impl From<io::Error> for CliError {
    fn from(e: io::Error) -> CliError {
        let broken_pipe = e.kind() == io::ErrorKind::BrokenPipe;
        CliError {
            broken_pipe,
            ..CliError::failed(e.to_string())
        }
    }
}

impl From<sessile::Error> for CliError {
    fn from(e: sessile::Error) -> CliError {
        // A reader that went away (`sessile export DIR - | head`) ends the output quietly.
        if let sessile::Error::DumpIo(io) = &e
            && io.kind() == io::ErrorKind::BrokenPipe
        {
            return CliError::from(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        let mut message = e.to_string();
        // Append causes that the message does not already spell out.
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message = format!("{message}: {text}");
            }
            source = cause.source();
        }
        CliError::failed(message)
    }
}

impl From<serde_json::Error> for CliError {
    fn from(e: serde_json::Error) -> CliError {
        if e.io_error_kind() == Some(io::ErrorKind::BrokenPipe) {
            return CliError::from(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        CliError::failed(e.to_string())
    }
}
