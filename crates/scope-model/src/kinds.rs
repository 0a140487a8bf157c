//! What a task kind (one `raw::poll<F, S>` instance) is called, as decided
//! from the binary by scope-stacks, and how every output shows it.
//!
//! A name is either exact (the binary spells `F` out: DWARF, v0 symbols,
//! or drop glue that only one future can own), ambiguous (the binary
//! narrows it to a few futures and does not say which: all are shown,
//! `my_app::{ticker | hog_cpu}`, never one picked), or unnamed (then where
//! its tasks are spawned, when the binary holds that, is the name).

/// How a kind was named: what the user can rely on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KindName {
    /// The future type `F` (and scheduler `S` when known), as spelled by the
    /// binary's DWARF or symbols.
    Exact { future: String, scheduler: Option<String> },
    /// One of these futures; the binary does not say which. `open`: or
    /// another future whose code is the same as theirs (merged functions
    /// keep one name), shown as a `?` alternative.
    Ambiguous { futures: Vec<String>, scheduler: Option<String>, open: bool },
    /// Nothing in the binary names the future.
    Unnamed,
}

/// Where the name came from, in the order naming tries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Evidence {
    /// `DW_AT_name` of the `raw::poll<F, S>` instance (in the binary or its
    /// separate debug file).
    Dwarf,
    /// A v0-mangled symbol spelling `raw::poll::<F, S>`.
    V0Symbol,
    /// The drop glue its task vtable calls (legacy symbols), with the
    /// tie-breakers of docs/design-notes.md.
    DropGlue,
    /// `#[track_caller]` locations in `.rodata` (spawn sites, awaited lines):
    /// present even in stripped binaries.
    Locations,
    Nothing,
}

/// What tasks of a kind are, which tells workers from blocking-pool threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindRole {
    /// An async task on a multi-thread or current_thread runtime.
    Async,
    /// A `LocalSet` task: runs wherever its set is driven.
    Local,
    /// `spawn_blocking` work.
    Blocking,
    /// Tokio's worker loop (itself a blocking task).
    WorkerLoop,
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskKind {
    pub name: KindName,
    pub evidence: Evidence,
    pub role: KindRole,
    /// `file:line:column` of each place tasks of this kind are spawned (the
    /// `Location` passed to `tokio::spawn` and friends), user code only.
    pub spawn_sites: Vec<String>,
    /// `file:line` of `#[track_caller]` calls in the kind's own poll code
    /// (the awaits on `sleep`, `timeout`, …), user code only.
    pub body_lines: Vec<String>,
}

impl TaskKind {
    pub fn unnamed() -> Self {
        TaskKind { name: KindName::Unnamed, evidence: Evidence::Nothing, role: KindRole::Unknown, spawn_sites: Vec::new(), body_lines: Vec::new() }
    }

    /// The name every output shows; None when nothing names it.
    pub fn label(&self) -> Option<String> {
        match &self.name {
            KindName::Exact { future, scheduler } => Some(kind_of_future(future, scheduler.as_deref().unwrap_or("_"))),
            KindName::Ambiguous { futures, scheduler, open } => {
                let labels: Vec<String> = futures.iter().map(|f| kind_of_future(f, scheduler.as_deref().unwrap_or("_"))).collect();
                let mut label = alternatives(&labels, *open);
                if let Some(site) = self.spawn_sites.first() {
                    label.push_str(&format!(" (spawned at {site}{})", more(self.spawn_sites.len())));
                }
                Some(label)
            }
            KindName::Unnamed => {
                let what = match self.role {
                    KindRole::Blocking => "spawn_blocking task",
                    KindRole::Local => "spawn_local task",
                    _ => "task",
                };
                if let Some(site) = self.spawn_sites.first() {
                    Some(format!("{what} spawned at {site}{}", more(self.spawn_sites.len())))
                } else {
                    self.body_lines.first().map(|line| format!("{what} awaiting at {line}{}", more(self.body_lines.len())))
                }
            }
        }
    }
}

fn more(count: usize) -> String {
    if count > 1 { format!(" +{} more", count - 1) } else { String::new() }
}

/// Splits a path at its top-level `::` (not inside `<…>`, `(…)`, `[…]`).
fn segments(path: &str) -> Vec<&str> {
    let (mut out, mut depth, mut from) = (Vec::new(), 0i32, 0);
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'<' | b'(' | b'[' => depth += 1,
            b'>' | b')' | b']' => depth -= 1,
            b':' if depth == 0 && bytes.get(i + 1) == Some(&b':') => {
                out.push(&path[from..i]);
                from = i + 2;
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(&path[from..]);
    out
}

/// A compiler-made scope or type: `{{closure}}`, `{closure#0}`,
/// `{async_fn_env#0}`, `{async_block#1}`, `{impl#0}`…; returns the part in
/// braces and any generic arguments DWARF attaches (`{async_fn_env#0}<u32>`).
fn braced(segment: &str) -> Option<(&str, &str)> {
    if let Some(rest) = segment.strip_prefix("{{") {
        let end = rest.find("}}")?;
        return Some((&rest[..end], &rest[end + 2..]));
    }
    let rest = segment.strip_prefix('{')?;
    let end = rest.find('}')?;
    Some((&rest[..end], &rest[end + 1..]))
}

/// `my_app::handler::{{closure}}` (legacy), `…::{closure#0}` (v0),
/// `…::{async_fn_env#0}` (DWARF) → `my_app::handler`: the async fn's own
/// state machine goes, one level only, so a block spawned inside stays
/// apart (`my_app::handler::{closure}`, with DWARF `…::{async_block#0}`).
/// Generic arguments DWARF puts on a closure move to the function:
/// `relay::{async_fn_env#0}<Counter>` → `relay<Counter>`, as legacy
/// symbols spell it.
pub fn abbreviate(name: &str) -> String {
    let segs = segments(name.trim());
    let mut out: Vec<String> = Vec::new();
    let last = segs.len().saturating_sub(1);
    for (i, seg) in segs.iter().enumerate() {
        let Some((inner, generics)) = braced(seg) else {
            out.push(seg.to_string());
            continue;
        };
        if !generics.is_empty()
            && let Some(prev) = out.last_mut()
            && !prev.ends_with('>')
        {
            prev.push_str(generics);
        }
        let own_body = i == last && (inner == "closure" || inner == "closure#0" || inner.starts_with("async_fn_env#"));
        // `{async_fn#0}` is the scope of the fn's body: the fn itself.
        if own_body || inner.starts_with("async_fn#") {
            continue;
        }
        out.push(format!("{{{}}}", inner.replacen("_env#", "#", 1)));
    }
    out.join("::")
}

/// The same name whatever spelled it (legacy, v0 or DWARF): every
/// compiler-made segment becomes `{closure}`, DWARF's generic arguments on
/// closures move to the function, generic arguments alike. For comparing,
/// never for display.
pub fn canonical(name: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for seg in segments(name.trim()) {
        match braced(seg) {
            Some((inner, generics)) => {
                if !generics.is_empty()
                    && let Some(prev) = out.last_mut()
                    && !prev.ends_with('>')
                {
                    prev.push_str(&canonical_generics(generics));
                }
                out.push(if inner.starts_with("impl") { "{impl}".into() } else { "{closure}".into() });
            }
            None => match seg.find('<') {
                Some(i) if seg.ends_with('>') && !seg.starts_with('<') => out.push(format!("{}{}", &seg[..i], canonical_generics(&seg[i..]))),
                _ => out.push(seg.to_string()),
            },
        }
    }
    out.join("::")
}

/// Whether two canonical names are the same future: segment by segment,
/// DWARF's `{impl}` standing for the type or `<impl … for …>` that legacy
/// and v0 symbols spell there, inside generic arguments too (a wrapper's:
/// `Instrumented<m::{impl}::listen::{closure}::{closure}>`).
pub fn same_future(a: &str, b: &str) -> bool {
    let (a, b) = (segments(a), segments(b));
    a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| same_segment(x, y))
}

fn same_segment(x: &str, y: &str) -> bool {
    if x == y || x == "{impl}" || y == "{impl}" {
        return true;
    }
    match (generic(x), generic(y)) {
        (Some((xn, xa)), Some((yn, ya))) if xn == yn => {
            let (xa, ya) = (arguments(xa), arguments(ya));
            xa.len() == ya.len() && xa.iter().zip(&ya).all(|(p, q)| same_future(p.trim(), q.trim()))
        }
        _ => false,
    }
}

/// `Name<args>` as (`Name`, `args`).
fn generic(segment: &str) -> Option<(&str, &str)> {
    let (name, args) = segment.split_once('<')?;
    Some((name, args.strip_suffix('>')?))
}

/// The top-level arguments of `A, B<C, D>`: `A`, `B<C, D>`.
fn arguments(list: &str) -> Vec<&str> {
    let (mut out, mut depth, mut from) = (Vec::new(), 0i32, 0);
    for (i, c) in list.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&list[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    out.push(&list[from..]);
    out
}

/// `<A, B<C>>` with each argument made canonical.
fn canonical_generics(generics: &str) -> String {
    let Some(inner) = generics.strip_prefix('<').and_then(|g| g.strip_suffix('>')) else { return generics.to_string() };
    let args: Vec<String> = arguments(inner).into_iter().map(canonical).collect();
    format!("<{}>", args.join(", "))
}

/// The kind of the blocking task each multi-thread worker runs in.
pub const WORKER_LOOP: &str = "spawn_blocking(tokio::runtime::scheduler::multi_thread::worker::run)";

const WRAPPERS: [&str; 3] = ["tracing::instrument::Instrumented<", "tracing_futures::Instrumented<", "tracing::instrument::WithDispatch<"];

/// `tokio::runtime::blocking::task::BlockingTask<my::job::{{closure}}>` →
/// `spawn_blocking(my::job)`; a `LocalSet` task (scheduler
/// `Arc<tokio::task::local::Shared>`) → `spawn_local(my::fut)`; a future in
/// `tracing`'s `Instrumented` → the future it wraps, `(instrumented)`;
/// other futures are abbreviated.
pub fn kind_of_future(future: &str, scheduler: &str) -> String {
    if let Some(inner) = WRAPPERS.iter().find_map(|w| future.strip_prefix(w)).and_then(|r| r.strip_suffix('>')) {
        return format!("{} (instrumented)", kind_of_future(inner, scheduler));
    }
    if scheduler.contains("tokio::task::local::Shared") {
        return format!("spawn_local({})", abbreviate(future));
    }
    const BLOCKING: &str = "tokio::runtime::blocking::task::BlockingTask<";
    // Tokio starts each worker as a blocking task around `worker::run`.
    const WORKER: &str = "tokio::runtime::scheduler::multi_thread::worker::";
    match future.strip_prefix(BLOCKING).and_then(|rest| rest.strip_suffix('>')) {
        Some(closure) if closure.starts_with(WORKER) => WORKER_LOOP.to_string(),
        Some(closure) => format!("spawn_blocking({})", abbreviate(closure)),
        None => abbreviate(future),
    }
}

/// The role a name implies.
pub fn role_of(future: &str, scheduler: Option<&str>) -> KindRole {
    let label = kind_of_future(future, scheduler.unwrap_or("_"));
    if label == WORKER_LOOP {
        KindRole::WorkerLoop
    } else if label.starts_with("spawn_blocking(") {
        KindRole::Blocking
    } else if label.starts_with("spawn_local(") {
        KindRole::Local
    } else {
        KindRole::Async
    }
}

/// `[a::b::ticker, a::b::hog_cpu]` → `a::b::{ticker | hog_cpu}`: the
/// common head and tail (cut at a path or generics boundary) once, the
/// differing middles in braces; `open` adds a `?` alternative. One
/// distinct label is itself (`a::b::{ticker | ?}` when open).
pub fn alternatives(labels: &[String], open: bool) -> String {
    let mut distinct: Vec<&str> = Vec::new();
    for l in labels {
        if !distinct.contains(&l.as_str()) {
            distinct.push(l);
        }
    }
    let unknown = if open { " | ?" } else { "" };
    match distinct.as_slice() {
        [] => "?".to_string(),
        [one] if open => {
            let segs = segments(one);
            match segs.split_last() {
                Some((last, head)) if !head.is_empty() => format!("{}::{{{last} | ?}}", head.join("::")),
                _ => format!("{{{one} | ?}}"),
            }
        }
        [one] => one.to_string(),
        all => {
            let boundary = |c: char| matches!(c, ':' | '<' | '>' | '(' | ')' | ',' | ' ');
            let first = all[0];
            let mut head = all.iter().fold(first.len(), |n, l| common_prefix(&first[..n], l));
            while head > 0 && !first[..head].ends_with(boundary) {
                head -= 1;
            }
            let shortest = all.iter().map(|l| l.len()).min().unwrap_or(0) - head;
            let mut tail = all.iter().fold(shortest, |n, l| common_suffix(&first[first.len() - n..], l)).min(shortest);
            while tail > 0 && !first[first.len() - tail..].starts_with(boundary) {
                tail -= 1;
            }
            let middles: Vec<&str> = all.iter().map(|l| &l[head..l.len() - tail]).collect();
            format!("{}{{{}{unknown}}}{}", &first[..head], middles.join(" | "), &first[first.len() - tail..])
        }
    }
}

fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices().zip(b.chars()).take_while(|((_, x), y)| x == y).last().map_or(0, |((i, c), _)| i + c.len_utf8())
}

fn common_suffix(a: &str, b: &str) -> usize {
    a.chars().rev().zip(b.chars().rev()).take_while(|(x, y)| x == y).map(|(c, _)| c.len_utf8()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abbreviates_every_spelling_alike() {
        assert_eq!(abbreviate("demo_app::cpu_heavy_loop::{{closure}}"), "demo_app::cpu_heavy_loop");
        assert_eq!(abbreviate("my_app::handler::{async_fn_env#0}"), "my_app::handler");
        assert_eq!(abbreviate("my_app::handler::{closure#0}"), "my_app::handler");
        assert_eq!(abbreviate("demo_app::short_task_loop::{{closure}}::{{closure}}"), "demo_app::short_task_loop::{closure}");
        assert_eq!(abbreviate("a::accept_loop::{async_fn#0}::{async_block_env#1}"), "a::accept_loop::{async_block#1}");
        assert_eq!(abbreviate("a::relay::{async_fn_env#0}<a::Counter>"), "a::relay<a::Counter>");
        assert_eq!(abbreviate("a::relay<a::Counter>::{{closure}}"), "a::relay<a::Counter>");
        assert_eq!(abbreviate("a::Pump<a::Counter>"), "a::Pump<a::Counter>");
    }

    #[test]
    fn canonical_names_agree_across_manglings() {
        for (legacy, dwarf) in [
            ("a::ticker::{{closure}}", "a::ticker::{async_fn_env#0}"),
            ("a::accept_loop::{{closure}}::{{closure}}", "a::accept_loop::{async_fn#0}::{async_block_env#1}"),
            ("a::relay<a::Counter>::{{closure}}", "a::relay::{async_fn_env#0}<a::Counter>"),
            ("a::blocking::{{closure}}::{{closure}}", "a::blocking::{async_block#0}::{closure_env#1}"),
        ] {
            assert_eq!(canonical(legacy), canonical(dwarf), "{legacy} vs {dwarf}");
        }
        assert_ne!(canonical("a::relay<a::Counter>::{{closure}}"), canonical("a::relay::{async_fn_env#0}<a::Doubler>"));
        assert_eq!(
            canonical("tracing::instrument::Instrumented<a::handle::{{closure}}>"),
            canonical("tracing::instrument::Instrumented<a::handle::{async_fn_env#0}>")
        );
        assert_eq!(canonical("x::Cell<a::f::{{closure}},alloc::sync::Arc<H>>"), canonical("x::Cell<a::f::{closure#0}, alloc::sync::Arc<H>>"));
        assert!(same_future(
            &canonical("m::server::Listener::run::{{closure}}::{{closure}}"),
            &canonical("m::server::{impl#0}::run::{async_fn#0}::{async_block_env#0}")
        ));
        assert!(!same_future(&canonical("m::A::run::{{closure}}"), &canonical("m::{impl#0}::stop::{async_fn_env#0}")));
        // Inside a wrapper's generic arguments too (bore-cli's tasks).
        assert!(same_future(
            &canonical("tracing::instrument::Instrumented<m::server::Server::listen::{{closure}}::{{closure}}>"),
            &canonical("tracing::instrument::Instrumented<m::server::{impl#0}::listen::{async_fn#0}::{async_block_env#0}>")
        ));
        assert!(!same_future(
            &canonical("tracing::instrument::Instrumented<m::server::Server::listen::{{closure}}>"),
            &canonical("tracing::instrument::Instrumented<m::server::{impl#0}::listen::{async_fn#0}::{async_block_env#0}>")
        ));
        assert!(!same_future(&canonical("w::Wrap<a::f::{{closure}}, b::S>"), &canonical("w::Wrap<a::f::{{closure}}, b::T>")));
    }

    #[test]
    fn ambiguity_is_spelled_out() {
        let labels = ["blocky::ticker", "blocky::hog_cpu", "blocky::sleepy_poll"].map(String::from);
        assert_eq!(alternatives(&labels, false), "blocky::{ticker | hog_cpu | sleepy_poll}");
        assert_eq!(alternatives(&labels, true), "blocky::{ticker | hog_cpu | sleepy_poll | ?}");
        let generic = ["a::Pump<a::Counter>", "a::Pump<a::Doubler>"].map(String::from);
        assert_eq!(alternatives(&generic, false), "a::Pump<a::{Counter | Doubler}>");
        let apart = ["x::f", "y::g"].map(String::from);
        assert_eq!(alternatives(&apart, false), "{x::f | y::g}");
        assert_eq!(alternatives(&["a::f".into(), "a::f".into()], false), "a::f");
        assert_eq!(alternatives(&["a::b::f".into()], true), "a::b::{f | ?}");
        assert_eq!(alternatives(&["a::P<a::C>".into()], true), "a::{P<a::C> | ?}");
        let kind = TaskKind {
            name: KindName::Ambiguous { futures: vec!["blocky::ticker::{{closure}}".into(), "blocky::hog_cpu::{{closure}}".into()], scheduler: None, open: false },
            evidence: Evidence::DropGlue,
            role: KindRole::Async,
            spawn_sites: vec!["src/main.rs:20:5".into()],
            body_lines: Vec::new(),
        };
        assert_eq!(kind.label().unwrap(), "blocky::{ticker | hog_cpu} (spawned at src/main.rs:20:5)");
    }

    #[test]
    fn wrappers_and_schedulers_show_what_runs() {
        assert_eq!(kind_of_future("tracing::instrument::Instrumented<mini_redis::server::run::{{closure}}::{{closure}}>", "_"), "mini_redis::server::run::{closure} (instrumented)");
        assert_eq!(kind_of_future("my::job::{{closure}}", "alloc::sync::Arc<tokio::task::local::Shared>"), "spawn_local(my::job)");
        assert_eq!(kind_of_future("tokio::runtime::blocking::task::BlockingTask<my::f::{{closure}}>", "_"), "spawn_blocking(my::f)");
        assert_eq!(role_of("tokio::runtime::blocking::task::BlockingTask<tokio::runtime::scheduler::multi_thread::worker::Launch::launch::{{closure}}>", None), KindRole::WorkerLoop);
        let unnamed = TaskKind { spawn_sites: vec!["src/server.rs:123:9".into(), "src/x.rs:1:1".into()], ..TaskKind::unnamed() };
        assert_eq!(unnamed.label().unwrap(), "task spawned at src/server.rs:123:9 +1 more");
        assert_eq!(TaskKind::unnamed().label(), None);
    }
}
