//! The pure half of runtime-scope: what was recorded ([`Recording`]), how raw
//! ring-buffer records become [`Event`]s ([`decode`]), and the per-thread
//! timeline built from them ([`Timeline`]). No kernel access, no root: every
//! function here is tested from recorded fixtures.

pub mod capture;
pub mod decode;
mod recording;
mod thread_state;
mod timeline;
mod workers;

pub use recording::{Event, Launch, Module, Recording, StopReason, ThreadInfo};
pub use thread_state::ThreadState;
pub use timeline::{OffReason, Span, SpanState, ThreadTimeline, Timeline};
pub use workers::{Role, WorkerRule};
