//! tracefs: where tracepoint formats live. Mounted on demand, because a fresh
//! machine often has it unmounted, and aya needs it to find tracepoint ids.

use anyhow::{Context, Result, bail};
use scope_common::FieldOffsets;
use std::collections::HashMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
const MOUNT_HINT: &str = "mount it with: mount -t tracefs nodev /sys/kernel/tracing";

/// The mounted tracefs among `candidates`; an error when one is there but
/// this user may not read it (root-only by default: a non-root run with
/// capabilities meets this, and "not mounted" would send it the wrong way).
fn mounted(candidates: &[&str]) -> Result<Option<PathBuf>> {
    for root in candidates.iter().map(PathBuf::from) {
        match std::fs::metadata(root.join("events")) {
            Ok(m) if m.is_dir() => return Ok(Some(root)),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                // SAFETY: geteuid has no preconditions.
                let uid = unsafe { libc::geteuid() };
                bail!(
                    "tracefs is mounted at {} but this user (uid {uid}) cannot read it: run as root, or let it read \
                     tracefs (e.g. mount -o remount,mode=755 {}); see README, \"Running without root\"",
                    root.display(),
                    root.display()
                );
            }
            _ => {}
        }
    }
    Ok(None)
}

/// The tracefs root, mounting it at /sys/kernel/tracing if nothing is mounted.
pub fn ensure_mounted() -> Result<PathBuf> {
    if let Some(path) = mounted(&CANDIDATES)? {
        return Ok(path);
    }
    let target = Path::new(CANDIDATES[0]);
    if !target.is_dir() {
        bail!("tracefs is not available ({} is missing): the kernel lacks CONFIG_TRACING?", target.display());
    }
    let c = |s: &str| CString::new(s).expect("no NUL in constant");
    let (src, dst, fs) = (c("nodev"), c(CANDIDATES[0]), c("tracefs"));
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!("tracefs is not mounted and mounting it failed ({err}); {MOUNT_HINT}");
    }
    mounted(&CANDIDATES[..1])?.with_context(|| format!("tracefs mounted but has no events/; {MOUNT_HINT}"))
}

/// Field name → (offset, size), from a tracepoint `format` file.
pub fn parse_format(text: &str) -> HashMap<String, (u32, u32)> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("field:") else { continue };
        let parts: Vec<&str> = rest.split(';').map(str::trim).collect();
        let (Some(decl), Some(off), Some(size)) = (parts.first(), parts.get(1), parts.get(2)) else {
            continue;
        };
        let name = decl.rsplit(' ').next().unwrap_or("");
        let name = name.split('[').next().unwrap_or(name);
        let num = |s: &str, key: &str| s.strip_prefix(key).and_then(|v| v.parse::<u32>().ok());
        if let (Some(o), Some(s)) = (num(off, "offset:"), num(size, "size:")) {
            fields.insert(name.to_string(), (o, s));
        }
    }
    fields
}

fn field(root: &Path, event: &str, name: &str, size: u32) -> Result<u32> {
    let path = root.join("events").join(event).join("format");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read tracepoint format {}", path.display()))?;
    let fields = parse_format(&text);
    match fields.get(name) {
        Some(&(offset, actual)) if actual == size => Ok(offset),
        Some(&(_, actual)) => bail!("{event}: field {name} has size {actual}, expected {size}; unsupported kernel"),
        None => bail!("{event}: field {name} not found in {}; unsupported kernel", path.display()),
    }
}

/// Offsets of every field the eBPF programs read, checked for size.
pub fn field_offsets(root: &Path) -> Result<FieldOffsets> {
    Ok(FieldOffsets {
        newtask_pid: field(root, "task/task_newtask", "pid", 4)?,
        newtask_comm: field(root, "task/task_newtask", "comm", 16)?,
        newtask_clone_flags: field(root, "task/task_newtask", "clone_flags", 8)?,
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_format;

    #[test]
    fn parses_kernel_format_file() {
        let text = "name: sched_switch\nID: 372\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\
            \tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
            \tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
            \tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;\n\n\
            print fmt: \"prev_comm=%s\", REC->prev_comm\n";
        let f = parse_format(text);
        assert_eq!(f["prev_comm"], (8, 16));
        assert_eq!(f["prev_pid"], (24, 4));
        assert_eq!(f["prev_state"], (32, 8));
        assert_eq!(f["common_type"], (0, 2));
        assert_eq!(f.len(), 4);
    }
}
