//! `export` and `import`: the dump file of `Store::export` (its format is in the
//! library's docs), written atomically to a file or to standard output, and read back
//! after checking it whole.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

use crate::exit::{CliError, OK};
use crate::fmt;
use crate::maintain::plural;
use crate::open::{self, Folder};

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
    let n = if to_stdout {
        store.export(BufWriter::new(io::stdout().lock()))?
    } else {
        // A private file beside the target, renamed over it once it is on disk: an
        // interrupted export never leaves a half-written file under the name.
        store.export_to(file).map_err(|e| match e {
            sessile::Error::DumpIo(io) => {
                let folder = match file.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                // The error may name the temporary file: say the folder instead.
                let why = match io.kind() {
                    io::ErrorKind::NotFound => "the folder does not exist".to_string(),
                    io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                    kind => kind.to_string(),
                };
                CliError::failed(format!("cannot write into {}: {why}", folder.display()))
            }
            other => CliError::from(other),
        })?
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
    let style = ProgressStyle::with_template(&format!("{{spinner}} {what} ({{elapsed}})"))
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bar = ProgressBar::new_spinner().with_style(style);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// A dump that failed to read, named: `{name}: {what is wrong}`, with what to do about a
/// version this build does not read.
fn dump_error(name: &str, e: sessile::Error) -> CliError {
    match e {
        sessile::Error::InvalidDump { detail } => {
            let error = CliError::failed(format!("{name}: {detail}"));
            if detail.starts_with("a version ") {
                error.hint("import it with the sessile release that wrote it, or a newer one")
            } else {
                error
            }
        }
        other => CliError::from(other).context(name),
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
    sessile::check_dump(BufReader::new(&mut source)).map_err(|e| dump_error(&name, e))?;
    source.rewind()?;

    let store = open::open(dir, Folder::CreateIfMissing, |c| c)?;
    if !merge && let Some(first) = store.dump().next() {
        first?;
        return Err(
            CliError::failed(format!("{} already holds sessions", open::shown(dir))).hint(
                if open::redis_url(dir).is_some() {
                    "import into a new or empty namespace, or pass --merge \
                     (sessions with the same key are replaced)"
                } else {
                    "import into a new or empty folder, or pass --merge \
                     (sessions with the same key are replaced)"
                },
            ),
        );
    }
    let progress = spinner("importing");
    let imported = store
        .import(BufReader::new(&mut source))
        .map_err(|e| dump_error(&name, e))?;
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
