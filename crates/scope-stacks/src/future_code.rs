//! Whether a future named by drop glue has code of its own in the binary.
//!
//! A drop-glue name is evidence only for a future the binary can create:
//! LLVM merges the glue of futures that drop alike and may keep one name
//! only, and the linker then drops the code of futures nothing spawns but
//! not the merged glue, which still carries their names. Seen in the demo:
//! tokio's `(&str, u16)` and `str` `to_socket_addrs` closures both hold one
//! `String`; only the `(&str, u16)` one is spawned, yet its task's glue is
//! named after the `str` one, whose `to_socket_addrs` is not in the binary
//! at all. A future has code when a function is named like it (its poll, a
//! closure's body) or like the function that creates it (a closure's or
//! async block's parent), or, for a named type, when any function names the
//! type; wrappers that only pass polls through (`BlockingTask`,
//! `Instrumented`) are looked through.

use crate::image::Image;
use object::{Object, ObjectSymbol, SymbolKind};
use std::collections::BTreeSet;

/// Wrappers whose own code says nothing about which future they wrap.
const PASS_THROUGH: [&str; 2] = ["tokio::runtime::blocking::task::BlockingTask<", "tracing::instrument::Instrumented<"];

/// The future whose code a task runs: `future` with pass-through wrappers
/// taken off (`BlockingTask<my::f::{{closure}}>` → `my::f::{{closure}}`).
pub(crate) fn own_code_of(future: &str) -> &str {
    let mut inner = future;
    while let Some(rest) = PASS_THROUGH.iter().find_map(|w| inner.strip_prefix(w)).and_then(|r| r.strip_suffix('>')) {
        inner = rest;
    }
    inner
}

/// What a function's name must be to be code of one future.
struct Anchor {
    /// Its own poll or body function, or the function it is (`worker::run`).
    own: String,
    /// The item a closure or async block is written in: that function or
    /// any closure in it (`my::f`, `my::f::{{closure}}`…). Not only the
    /// direct parent: an async fn's body is often inlined into the task
    /// that polls it, leaving no symbol of its own.
    parent: Option<String>,
    /// Not a closure: a named type's path without generic arguments
    /// (`my::Pump`), whose impls and methods are its code.
    ty: Option<String>,
}

impl Anchor {
    fn of(future: &str) -> Anchor {
        let spelled = own_code_of(future);
        // Legacy symbols of generic functions do not spell their arguments
        // (`my::relay::{{closure}}` for `my::relay<my::Counter>::{{closure}}`).
        let own = without_arguments(spelled);
        let mut item = own.as_str();
        while let Some((head, _)) = last_segment(item).filter(|(_, last)| last.starts_with('{')) {
            item = head;
        }
        let parent = (item != own && !item.is_empty()).then(|| item.to_string());
        let ty = parent.is_none().then(|| own.clone());
        Anchor { own, parent, ty }
    }

    fn matches(&self, function: &str) -> bool {
        let under = |path: &str| function == path || function.strip_prefix(path).is_some_and(|r| r.starts_with("::"));
        if function == self.own || self.parent.as_deref().is_some_and(under) {
            return true;
        }
        // A type's impls spell it with the impl's own parameters
        // (`<my::Pump<T> as core::future::future::Future>::poll`).
        self.ty.as_deref().is_some_and(|t| {
            under(t)
                || function.starts_with(&format!("{t}<"))
                || [format!("<{t}<"), format!("<{t} as ")].iter().any(|p| function.contains(p.as_str()))
        })
    }
}

/// `a::f<b::C>::{{closure}}` → `a::f::{{closure}}`: generic arguments of
/// the path's own segments dropped (those inside a `<impl …>` or
/// `<T as Trait>` segment kept).
fn without_arguments(path: &str) -> String {
    let (mut out, mut depth, mut dropping) = (String::new(), 0i32, false);
    let mut prev = ' ';
    for c in path.chars() {
        match c {
            '<' if depth == 0 && (prev.is_alphanumeric() || prev == '_') => dropping = true,
            _ => {}
        }
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' if prev == '-' => {}
            '>' | ')' | ']' => depth -= 1,
            _ => {}
        }
        if !dropping {
            out.push(c);
        }
        if dropping && depth == 0 {
            dropping = false;
        }
        prev = c;
    }
    out
}

/// `a::<impl X for b::C>::f::{{closure}}` → (`a::<impl X for b::C>::f`,
/// `{{closure}}`): the last `::` outside brackets.
fn last_segment(path: &str) -> Option<(&str, &str)> {
    let (mut depth, mut split) = (0i32, None);
    for (i, c) in path.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            // `->` in a fn type closes nothing.
            '>' if path[..i].ends_with('-') => {}
            '>' | ')' | ']' => depth -= 1,
            ':' if depth == 0 && path[i..].starts_with("::") && !path[..i].ends_with(':') => split = Some(i),
            _ => {}
        }
    }
    split.map(|i| (&path[..i], &path[i + 2..]))
}

/// Which of `futures` have code of their own among the binary's functions
/// (drop glue does not count: it is what is being checked).
pub(crate) fn with_code(image: &Image, futures: &BTreeSet<String>) -> BTreeSet<String> {
    if futures.is_empty() {
        return BTreeSet::new();
    }
    let mut left: Vec<(&String, Anchor)> = futures.iter().map(|f| (f, Anchor::of(f))).collect();
    let mut found = BTreeSet::new();
    for sym in image.file.symbols().filter(|s| s.kind() == SymbolKind::Text && s.address() != 0) {
        let Ok(raw) = sym.name() else { continue };
        if raw.contains("drop_in_place") {
            continue;
        }
        let name = format!("{:#}", rustc_demangle::demangle(raw));
        left.retain(|(f, anchor)| {
            let hit = anchor.matches(&name);
            if hit {
                found.insert((*f).clone());
            }
            !hit
        });
        if left.is_empty() {
            break;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_through_wrappers_to_the_future_that_runs() {
        let blocking = "tokio::runtime::blocking::task::BlockingTask<my::f::{{closure}}>";
        assert_eq!(own_code_of(blocking), "my::f::{{closure}}");
        assert_eq!(own_code_of("tracing::instrument::Instrumented<my::g::{{closure}}>"), "my::g::{{closure}}");
        assert_eq!(own_code_of("my::Pump<my::Counter>"), "my::Pump<my::Counter>");
    }

    #[test]
    fn code_of_a_future_is_its_body_its_parent_or_its_type() {
        let addr = "tokio::net::addr::<impl tokio::net::addr::sealed::ToSocketAddrsPriv for str>::to_socket_addrs";
        let closure = Anchor::of(&format!("tokio::runtime::blocking::task::BlockingTask<{addr}::{{{{closure}}}}>"));
        assert!(closure.matches(addr));
        assert!(closure.matches(&format!("{addr}::{{{{closure}}}}")));
        // The other impl's function, of the same name but for another type, is not.
        assert!(!closure.matches("tokio::net::addr::<impl tokio::net::addr::sealed::ToSocketAddrsPriv for (&str,u16)>::to_socket_addrs"));
        assert!(!closure.matches(&format!("{addr}2")));
        assert_eq!(without_arguments("my::relay<my::Counter>::{{closure}}"), "my::relay::{{closure}}");
        assert_eq!(without_arguments("a::<impl a::T for a::B<u8>>::f"), "a::<impl a::T for a::B<u8>>::f");
        let generic = Anchor::of("my::relay<my::Counter>::{{closure}}");
        assert!(generic.matches("my::relay::{{closure}}") && generic.matches("my::relay"));
        let nested = Anchor::of("my::Pump<my::a::{{closure}}>");
        assert!(nested.parent.is_none() && nested.ty.as_deref() == Some("my::Pump"));
        let block = Anchor::of("my::accept::{{closure}}::{{closure}}");
        assert!(block.matches("my::accept::{{closure}}") && block.matches("my::accept") && !block.matches("my::accept_all::{{closure}}"));
        let plain = Anchor::of("my::Tick");
        assert!(plain.matches("<my::Tick as core::future::future::Future>::poll") && !plain.matches("<my::Ticker as core::future::future::Future>::poll"));
        let ty = Anchor::of("my::Pump<my::Counter>");
        assert!(
            ty.matches("<my::Pump<T> as core::future::future::Future>::poll") && ty.matches("my::Pump<T>::new") && !ty.matches("my::Pumping::run")
        );
        let worker = Anchor::of("tokio::runtime::blocking::task::BlockingTask<tokio::runtime::scheduler::multi_thread::worker::run>");
        assert!(
            worker.matches("tokio::runtime::scheduler::multi_thread::worker::run")
                && !worker.matches("tokio::runtime::scheduler::multi_thread::worker")
        );
    }
}
