//! Hash maps for the recorder's per-event path. Their keys are thread ids
//! and addresses the kernel side reported, looked up for nearly every
//! record; std's SipHash was 9% of the recorder's CPU on a busy server
//! (perf, mini-redis). foldhash is seeded per map, so still not a table
//! a target could flood by picking its addresses.

pub type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type Set<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
