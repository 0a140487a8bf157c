//! Which format an output file gets, and writing a recording in it.

use crate::cli::Format;
use crate::failure::usage;
use crate::output;
use anyhow::Result;
use scope_model::{Recording, Symbols, Timeline, capture};
use std::path::Path;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Chrome JSON over this is slow to open (viewers parse it whole).
const LARGE_CHROME_TRACE: u64 = 100 << 20;

/// `--format` if given, else the file's extension.
pub fn choose(path: &Path, format: Option<Format>) -> Result<Format> {
    if let Some(format) = format {
        return Ok(format);
    }
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    if name.ends_with(".pftrace") || name.ends_with(".perfetto-trace") {
        Ok(Format::Perfetto)
    } else if name.ends_with(".json") {
        Ok(Format::Chrome)
    } else if name.ends_with(".rscope") {
        Ok(Format::Capture)
    } else {
        usage(format!(
            "{}: cannot tell the format from the extension; use .pftrace, .json or .rscope, or pass --format",
            path.display()
        ))
    }
}

/// Writes `recording` (already turned into `timeline`) to `path`; returns a
/// one-line description of what was written.
pub fn write(path: &Path, format: Format, recording: &Recording, timeline: &Timeline, symbols: &Symbols) -> Result<String> {
    let (what, size) = match format {
        Format::Chrome => {
            let (n, size) = output::write_atomically(path, |out| scope_export::chrome::write(timeline, symbols, VERSION, out))?;
            if size >= LARGE_CHROME_TRACE {
                say!(
                    "runtime-scope: the Chrome trace is {} MB, more than viewers load comfortably; a Perfetto trace of the same \
                     recording is about 19 times smaller (-o FILE.pftrace, or `runtime-scope export` the capture)",
                    size >> 20
                );
            }
            (format!("Chrome trace, {n} events"), size)
        }
        Format::Perfetto => {
            let (n, size) = output::write_atomically(path, |out| scope_export::perfetto::write(timeline, symbols, out))?;
            (format!("Perfetto trace, {n} packets"), size)
        }
        Format::Capture => {
            let ((), size) = output::write_atomically(path, |out| capture::write_recording(recording, out))?;
            (format!("capture, {} events", recording.events.len()), size)
        }
    };
    Ok(format!("{} written to {} ({what}, {:.1} MB)", kind_name(format), path.display(), size as f64 / 1e6))
}

fn kind_name(format: Format) -> &'static str {
    match format {
        Format::Capture => "Capture",
        Format::Chrome | Format::Perfetto => "Trace",
    }
}

pub fn how_to_open(format: Format, path: &Path) -> String {
    match format {
        Format::Capture => format!(
            "Convert it with `runtime-scope export {} -o trace.pftrace`, or summarise it with `runtime-scope report {}`.",
            path.display(),
            path.display()
        ),
        Format::Perfetto => "Open it at https://ui.perfetto.dev (\"Open trace file\").".to_string(),
        Format::Chrome => {
            "Open it at https://ui.perfetto.dev (\"Open trace file\") or in chrome://tracing (\"Load\").".to_string()
        }
    }
}
