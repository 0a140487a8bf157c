//! The Perfetto export of a timeline, read back as the trace processor
//! reads it (`scope_export::perfetto::readback`).

// Not every test binary that includes `common` names them all.
#[allow(unused_imports)]
pub use scope_export::perfetto::readback::{Decoded, Run, Slice, Waking};
use scope_model::{Symbols, Timeline};

pub fn decode(tl: &Timeline, symbols: &Symbols) -> Decoded {
    let mut bytes = Vec::new();
    scope_export::perfetto::write(tl, symbols, &mut bytes).unwrap();
    scope_export::perfetto::readback::read(&bytes).unwrap_or_else(|e| panic!("the trace reads back: {e}"))
}
