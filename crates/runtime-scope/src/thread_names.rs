//! Thread names while recording. Threads name themselves just after they
//! start (`pthread_setname_np`), so the name at creation is the parent's.
//! The kernel side no longer compares names at every switch (that was a
//! map lookup per context switch); instead a new thread's name is read
//! from /proc on the next drain, an exiting thread reports its final name,
//! and every live thread's name is read again when recording stops.

use scope_model::Event;
use std::collections::HashMap;

pub struct ThreadNames {
    pid: u32,
    names: HashMap<u32, String>,
    /// New threads whose name may still change right after creation.
    fresh: Vec<u32>,
}

impl ThreadNames {
    pub fn new(pid: u32, initial: &[(u32, String)]) -> ThreadNames {
        ThreadNames { pid, names: initial.iter().cloned().collect(), fresh: Vec::new() }
    }

    fn read(&self, tid: u32) -> Option<String> {
        let name = std::fs::read_to_string(format!("/proc/{}/task/{tid}/comm", self.pid)).ok()?;
        Some(name.trim_end_matches('\n').to_string())
    }

    /// A `Rename` when `name` differs from what we last said of `tid`.
    fn observe(&mut self, ts: u64, tid: u32, name: String) -> Option<Event> {
        let old = self.names.insert(tid, name.clone());
        (old.as_ref() != Some(&name)).then_some(Event::Rename { ts, tid, name })
    }

    /// Watches what an event says about names.
    pub fn saw(&mut self, event: &Event) {
        if let Event::NewThread { tid, name, .. } = event {
            self.names.insert(*tid, name.clone());
            self.fresh.push(*tid);
        }
    }

    pub fn exited(&mut self, ts: u64, tid: u32, name: String) -> Option<Event> {
        self.fresh.retain(|&t| t != tid);
        self.observe(ts, tid, name)
    }

    /// Names new threads gave themselves since the last call.
    pub fn refresh_fresh(&mut self, ts: u64) -> Vec<Event> {
        let fresh = std::mem::take(&mut self.fresh);
        fresh.into_iter().filter_map(|tid| self.read(tid).and_then(|name| self.observe(ts, tid, name))).collect()
    }

    /// Every live thread's current name, as renames where it changed.
    pub fn refresh_all(&mut self, ts: u64) -> Vec<Event> {
        self.fresh.clear();
        let mut tids: Vec<u32> = self.names.keys().copied().collect();
        tids.sort_unstable();
        tids.into_iter().filter_map(|tid| self.read(tid).and_then(|name| self.observe(ts, tid, name))).collect()
    }

    pub fn current(&self) -> HashMap<u32, String> {
        self.names.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_only_on_change() {
        let mut names = ThreadNames::new(std::process::id(), &[(1, "main".into())]);
        assert_eq!(names.exited(5, 1, "main".into()), None);
        assert_eq!(names.exited(6, 1, "other".into()), Some(Event::Rename { ts: 6, tid: 1, name: "other".into() }));
    }

    #[test]
    fn reads_a_fresh_threads_own_name() {
        let me = std::process::id();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("named-later".into())
            .spawn(move || {
                tx.send(unsafe { libc::gettid() } as u32).unwrap();
                done_rx.recv().unwrap();
            })
            .unwrap();
        let tid = rx.recv().unwrap();
        let mut names = ThreadNames::new(me, &[]);
        names.saw(&Event::NewThread { ts: 1, tid, parent_tid: me, name: "parent".into() });
        let renames = names.refresh_fresh(2);
        assert_eq!(renames, vec![Event::Rename { ts: 2, tid, name: "named-later".into() }]);
        assert!(names.refresh_fresh(3).is_empty(), "read once");
        done_tx.send(()).unwrap();
        handle.join().unwrap();
    }
}
