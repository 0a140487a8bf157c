//! The pure half of runtime-scope: what was recorded ([`Recording`]), how raw
//! ring-buffer records become [`Event`]s ([`decode`]), and the per-thread
//! timeline built from them ([`Timeline`]). No kernel access, no root: every
//! function here is tested from recorded fixtures.

pub mod capture;
pub mod decode;
pub mod identity;
pub mod kinds;
mod recording;
mod symbols;
mod thread_state;
mod timeline;
mod workers;

pub use recording::{Event, Frame, Launch, Module, Recording, StackReason, StopReason, ThreadInfo};
pub use kinds::{Evidence, KindName, KindRole, TaskKind};
pub use symbols::{CUT_SHORT, ResolvedFrame, Symbols, is_plumbing as symbols_is_plumbing};
pub use thread_state::ThreadState;
pub use timeline::spans;
pub use timeline::rows_so_far;
pub use timeline::{OffReason, Poll, Span, SpanState, Spawn, Stack, ThreadTimeline, Timeline, Wake, Waker, WorkerStart};
pub use workers::{Polled, Role, WorkerRule};
