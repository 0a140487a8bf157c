//! uprobe_multi links (Linux 6.6+): every uprobe of one program on one
//! binary in a single link, attached by one `bpf()` call and removed with
//! one RCU grace period for all (measured with a C program: 22 probes off
//! in 62–75 ms instead of 2.39 s one by one). That makes exact polls
//! something a recording can switch on and off while it runs.
//!
//! aya 0.14 can neither load a program with the `BPF_TRACE_UPROBE_MULTI`
//! attach type the kernel requires for such links, nor create them. So
//! this loads a second copy of the uprobe programs itself: aya-obj parses
//! and relocates the same object against the maps aya already created
//! (same fds, so both copies write the same ring buffer), and two raw
//! `bpf()` calls load the program and create the link.

use anyhow::{Context, Result, bail};
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_KPROBE: u32 = 2;
const BPF_TRACE_UPROBE_MULTI: u32 = 48;
const BPF_F_UPROBE_MULTI_RETURN: u32 = 1;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, zero-padded (the kernel
/// reads the size we pass and requires unknown tail bytes to be zero).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    tail: [u64; 10],
}

/// The `BPF_LINK_CREATE` part of `union bpf_attr` for uprobe_multi.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    path: u64,
    offsets: u64,
    ref_ctr_offsets: u64,
    cookies: u64,
    cnt: u32,
    multi_flags: u32,
    pid: u32,
    _pad: u32,
    tail: [u64; 8],
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<OwnedFd> {
    // SAFETY: attr is a properly sized, zero-padded bpf_attr variant that
    // outlives the call; the kernel returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size_of::<T>() as u32) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Loads `programs` from the eBPF object as uprobe_multi programs, their map
/// references resolved to `maps` (name → fd of the map aya created).
pub fn load(object: &[u8], programs: &[&str], maps: &HashMap<String, RawFd>) -> Result<HashMap<String, OwnedFd>> {
    let mut obj = aya_obj::Object::parse(object).context("parsing the eBPF object")?;
    let definitions: Vec<(String, aya_obj::Map)> = obj.maps.iter().map(|(n, m)| (n.clone(), m.clone())).collect();
    let mut with_fds = Vec::new();
    for (name, map) in &definitions {
        let fd = *maps.get(name).with_context(|| format!("map {name} was not created"))?;
        with_fds.push((name.as_str(), fd, map));
    }
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
    obj.relocate_maps(with_fds.into_iter(), &text_sections).context("relocating map references")?;
    obj.relocate_calls(&text_sections).context("relocating calls")?;
    let license = CString::new("GPL").expect("no NUL");
    let mut loaded = HashMap::new();
    for &name in programs {
        let program = obj.programs.get(name).with_context(|| format!("program {name} missing from the eBPF object"))?;
        let function = obj.functions.get(&program.function_key()).with_context(|| format!("no code for {name}"))?;
        let mut log = vec![0u8; 64 * 1024];
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_KPROBE,
            insn_cnt: function.instructions.len() as u32,
            insns: function.instructions.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 1,
            log_size: log.len() as u32,
            log_buf: log.as_mut_ptr() as u64,
            expected_attach_type: BPF_TRACE_UPROBE_MULTI,
            ..Default::default()
        };
        let n = name.len().min(15);
        attr.prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
        match bpf(BPF_PROG_LOAD, &mut attr) {
            Ok(fd) => {
                loaded.insert(name.to_string(), fd);
            }
            Err(e) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let tail: String = String::from_utf8_lossy(&log[..end]).lines().rev().take(3).collect::<Vec<_>>().join(" / ");
                bail!("the kernel rejected {name} as a uprobe_multi program ({e}): {tail}");
            }
        }
    }
    Ok(loaded)
}

/// One link: `program` at every file offset of `binary`, for process `pid`
/// only; `cookies` (one per offset) reach the program; `returns` makes it
/// a uretprobe at each.
pub fn attach(program: &OwnedFd, binary: &Path, offsets: &[u64], cookies: &[u64], pid: u32, returns: bool) -> Result<OwnedFd> {
    if offsets.is_empty() {
        bail!("no offsets to attach to");
    }
    assert_eq!(offsets.len(), cookies.len(), "one cookie per offset");
    let path = CString::new(binary.as_os_str().as_encoded_bytes()).context("binary path with a NUL byte")?;
    let mut attr = LinkCreateAttr {
        prog_fd: program.as_raw_fd() as u32,
        attach_type: BPF_TRACE_UPROBE_MULTI,
        path: path.as_ptr() as u64,
        offsets: offsets.as_ptr() as u64,
        cookies: cookies.as_ptr() as u64,
        cnt: offsets.len() as u32,
        multi_flags: if returns { BPF_F_UPROBE_MULTI_RETURN } else { 0 },
        pid,
        ..Default::default()
    };
    bpf(BPF_LINK_CREATE, &mut attr).with_context(|| format!("uprobe_multi link on {} ({} offsets)", binary.display(), offsets.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layouts_match_the_kernel() {
        // Offsets from include/uapi/linux/bpf.h.
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, path), 16);
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, cnt), 48);
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, pid), 56);
    }
}
