//! The kernel's own type information (`/sys/kernel/btf/vmlinux`): where the
//! fields our programs read sit in `task_struct` on the running kernel.
//!
//! Hand-written on purpose (about 150 lines): aya parses BTF but keeps member
//! offsets crate-private, and the one standalone crate (btf-rs) is LGPL.
//! Only what lookups need is decoded: names, structs/unions with their
//! members, the modifiers between them, function prototypes and variables.

use anyhow::{Context, Result, bail};
use std::collections::HashMap;

const MAGIC: u16 = 0xeb9f;

/// BTF kinds (`BTF_KIND_*`).
mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

#[derive(Clone, Debug)]
struct Type {
    name: u32,
    kind: u32,
    /// Size (structs, ints) or the referenced type id (pointers, modifiers, vars).
    size_or_type: u32,
    /// Struct/union members (name, type, bit offset), func-proto params
    /// (name, type, 0), datasec entries (var type, byte offset, size), an
    /// array's (element type, index type, count).
    items: Vec<(u32, u32, u32)>,
}

pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    by_name: HashMap<String, Vec<u32>>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32> {
    let bytes = data.get(at..at + 4).context("BTF data ends inside a record")?;
    Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Btf> {
        let path = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(path).with_context(|| {
            format!("cannot read {path}: runtime-scope needs a kernel built with BTF (CONFIG_DEBUG_INFO_BTF=y)")
        })?;
        Btf::parse(&data).with_context(|| format!("cannot parse {path}"))
    }

    pub fn parse(data: &[u8]) -> Result<Btf> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            bail!("not little-endian BTF");
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
        let types_data = data.get(hdr_len + type_off..hdr_len + type_off + type_len).context("type section out of bounds")?;
        let strings = data.get(hdr_len + str_off..hdr_len + str_off + str_len).context("string section out of bounds")?.to_vec();
        // Type id 0 is void.
        let mut types = vec![Type { name: 0, kind: 0, size_or_type: 0, items: Vec::new() }];
        let mut at = 0;
        while at < types_data.len() {
            let name = u32_at(types_data, at)?;
            let info = u32_at(types_data, at + 4)?;
            let size_or_type = u32_at(types_data, at + 8)?;
            at += 12;
            let (kind, vlen, kind_flag) = ((info >> 24) & 0x1f, (info & 0xffff) as usize, info >> 31 == 1);
            let mut items = Vec::new();
            match kind {
                kind::INT | kind::VAR | kind::DECL_TAG => at += 4,
                kind::ARRAY => {
                    items.push((u32_at(types_data, at)?, u32_at(types_data, at + 4)?, u32_at(types_data, at + 8)?));
                    at += 12;
                }
                kind::STRUCT | kind::UNION => {
                    for _ in 0..vlen {
                        let offset = u32_at(types_data, at + 8)?;
                        let bits = if kind_flag { offset & 0x00ff_ffff } else { offset };
                        items.push((u32_at(types_data, at)?, u32_at(types_data, at + 4)?, bits));
                        at += 12;
                    }
                }
                kind::ENUM => at += 8 * vlen,
                kind::ENUM64 => at += 12 * vlen,
                kind::FUNC_PROTO => {
                    for _ in 0..vlen {
                        items.push((u32_at(types_data, at)?, u32_at(types_data, at + 4)?, 0));
                        at += 8;
                    }
                }
                kind::DATASEC => {
                    for _ in 0..vlen {
                        items.push((u32_at(types_data, at)?, u32_at(types_data, at + 4)?, u32_at(types_data, at + 8)?));
                        at += 12;
                    }
                }
                _ => {}
            }
            types.push(Type { name, kind, size_or_type, items });
        }
        let mut btf = Btf { types, strings, by_name: HashMap::new() };
        for id in 1..btf.types.len() as u32 {
            let name = btf.name_of(id).to_string();
            if !name.is_empty() {
                btf.by_name.entry(name).or_default().push(id);
            }
        }
        Ok(btf)
    }

    fn name_of(&self, id: u32) -> &str {
        let Some(t) = self.types.get(id as usize) else { return "" };
        let rest = self.strings.get(t.name as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn find(&self, name: &str, kind: u32) -> Option<u32> {
        self.by_name.get(name)?.iter().copied().find(|&id| self.types[id as usize].kind == kind)
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> u32 {
        while let Some(t) = self.types.get(id as usize) {
            match t.kind {
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => id = t.size_or_type,
                _ => break,
            }
        }
        id
    }

    /// Byte offset and type of `member` in struct/union `id`, looking into
    /// anonymous members (the kernel nests many fields in unnamed unions).
    fn member(&self, id: u32, member: &str) -> Option<(u32, u32)> {
        let t = self.types.get(self.resolve(id) as usize)?;
        if t.kind != kind::STRUCT && t.kind != kind::UNION {
            return None;
        }
        for &(name, ty, bits) in &t.items {
            if name == 0 {
                if let Some((inner, found)) = self.member(ty, member) {
                    return Some((bits / 8 + inner, found));
                }
            } else if self.strings_at(name) == member {
                return Some((bits / 8, ty));
            }
        }
        None
    }

    fn strings_at(&self, offset: u32) -> &str {
        let rest = self.strings.get(offset as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Byte offset of a dotted member path (`thread.fsbase`) in struct
    /// `name`, with the size of the field it ends at.
    pub fn offset_of(&self, name: &str, path: &str) -> Option<(u32, u32)> {
        let mut ty = self.find(name, kind::STRUCT)?;
        let mut offset = 0;
        for part in path.split('.') {
            let (at, member_ty) = self.member(ty, part)?;
            offset += at;
            ty = member_ty;
        }
        Some((offset, self.size_of(ty)?))
    }

    fn size_of(&self, id: u32) -> Option<u32> {
        let t = self.types.get(self.resolve(id) as usize)?;
        match t.kind {
            kind::INT | kind::STRUCT | kind::UNION | kind::ENUM | kind::ENUM64 => Some(t.size_or_type),
            kind::PTR => Some(8),
            kind::ARRAY => {
                let &(element, _, count) = t.items.first()?;
                self.size_of(element)?.checked_mul(count)
            }
            _ => None,
        }
    }

    /// Number of arguments the kernel passes to a BTF tracepoint program
    /// attached to `event` (the prototype of `btf_trace_<event>`, minus
    /// its leading context pointer).
    pub fn tracepoint_args(&self, event: &str) -> Option<usize> {
        let typedef = self.find(&format!("btf_trace_{event}"), kind::TYPEDEF)?;
        let ptr = self.types.get(typedef as usize)?.size_or_type;
        let proto = self.types.get(ptr as usize).filter(|t| t.kind == kind::PTR)?.size_or_type;
        let proto = self.types.get(proto as usize).filter(|t| t.kind == kind::FUNC_PROTO)?;
        Some(proto.items.len().saturating_sub(1))
    }

    /// Size in bytes of struct `name`.
    pub fn struct_size(&self, name: &str) -> Option<u32> {
        self.size_of(self.find(name, kind::STRUCT)?)
    }
}

#[cfg(test)]
mod tests {
    use super::Btf;

    /// The running kernel's BTF: the fields our programs read must be found,
    /// with the sizes the programs read them at.
    #[test]
    fn finds_task_struct_fields_on_this_kernel() {
        let btf = Btf::from_sys_fs().expect("this machine has kernel BTF");
        let (tgid, size) = btf.offset_of("task_struct", "tgid").expect("task_struct.tgid");
        assert_eq!(size, 4);
        let (pid, _) = btf.offset_of("task_struct", "pid").expect("task_struct.pid");
        assert_eq!(tgid, pid + 4, "pid and tgid are adjacent pid_t fields");
        let (_, fsbase) = btf.offset_of("task_struct", "thread.fsbase").expect("task_struct.thread.fsbase");
        assert_eq!(fsbase, 8);
        assert_eq!(btf.offset_of("task_struct", "comm").map(|(_, s)| s), Some(16), "comm is char[TASK_COMM_LEN]");
        assert!(btf.tracepoint_args("sched_switch").is_some_and(|n| n == 3 || n == 4));
        assert_eq!(btf.tracepoint_args("sched_waking"), Some(1));
        assert!(btf.offset_of("task_struct", "no_such_field").is_none());
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all, not at all").is_err());
        let mut header = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        header.extend_from_slice(&[0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(Btf::parse(&header).is_err(), "type section past the end");
    }
}
