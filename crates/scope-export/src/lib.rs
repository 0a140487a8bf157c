//! Pure exporters from a [`scope_model::Timeline`]: Chrome trace JSON (loads
//! in chrome://tracing and ui.perfetto.dev) and the end-of-run summary.

pub mod chrome;
pub mod counters;
pub mod flows;
pub mod insights;
pub mod labels;
pub mod perfetto;
pub mod summary;
pub mod task_ids;
pub mod tasks;
#[cfg(test)]
mod test_recording;

/// Microseconds since the start of the recording, as trace viewers want them.
pub(crate) fn micros(ns_since_start: u64) -> f64 {
    // Shortest float repr keeps the ns digits exact up to ~100 days.
    ns_since_start as f64 / 1_000.0
}
