//! `--polls starts`: a probe on each poll's entry, none on its return
//! (about half the cost per poll; BENCHMARKS.md, Cost per poll). The
//! returns stay on only while the task id's place in Tokio's CONTEXT is
//! being learned (that needs to know which poll is open); from then on a
//! poll ends where its worker is first seen outside it (the model's
//! `timeline::poll_ends`), told by the task ids read at switch-outs and
//! samples, and by the id each poll was entered under (`PollInside`,
//! written when it changes on a thread).

use crate::probes::{ProbeSet, Probes};
use anyhow::Result;
use scope_model::Event;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

pub struct PollReturns {
    /// Whether to take the returns off once the task id can be read.
    starts_only: bool,
    /// When they went off (u64::MAX: on). A return still firing while its
    /// link closes is left out, as the timeline leaves it out.
    off_at: Cell<u64>,
    /// Set when they go off, until the next drain forgets the open polls.
    just_off: Cell<bool>,
    /// The id each thread's last poll was entered under: a `PollInside`
    /// is written when it changes (a worker's polls are entered from its
    /// own loop, under one id, thousands of times a second).
    entered_under: RefCell<HashMap<u32, u64>>,
}

impl PollReturns {
    pub fn new(starts_only: bool) -> PollReturns {
        PollReturns { starts_only, off_at: Cell::new(u64::MAX), just_off: Cell::new(false), entered_under: Default::default() }
    }

    /// Whether a record at `ts` came after the returns went off.
    pub fn off_by(&self, ts: u64) -> bool {
        ts >= self.off_at.get()
    }

    /// Once, for the drain: the returns went off since it last looked.
    pub fn take_just_off(&self) -> bool {
        self.just_off.replace(false)
    }

    /// `--polls starts`: the returns come off as soon as the task id's
    /// place is known.
    pub fn starts_only(&self) -> bool {
        self.starts_only
    }

    /// Takes the returns off (the task id's place is known by now: with
    /// `--polls starts`, or `--polls auto` over its budget) and gives the
    /// event that says so, the first time.
    pub fn take_off(&self, probes: &mut Probes, now_ns: u64) -> Result<Option<Event>> {
        if self.off_at.get() != u64::MAX {
            return Ok(None);
        }
        probes.detach_task_probes(ProbeSet::Returns)?;
        probes.with_returns = false;
        probes.read_poll_nesting()?;
        self.off_at.set(now_ns);
        self.just_off.set(true);
        Ok(Some(Event::PollReturnsOff { ts: now_ns }))
    }

    /// `--polls starts` where the task id's place was known before
    /// recording: the returns were never attached (and the entries read
    /// their nesting from the first, `recorder::attach`), so every poll
    /// entry recorded is one without a return, from the window's start on.
    pub fn never_on(&self, start_ns: u64) -> Event {
        self.off_at.set(0);
        self.just_off.set(true);
        Event::PollReturnsOff { ts: start_ns }
    }

    /// The event naming the task id a poll starting now on `tid` was
    /// entered under, when it is not the one its last poll was.
    pub fn inside(&self, ts: u64, tid: u32, outer_id: u64) -> Option<Event> {
        let changed = self.entered_under.borrow_mut().insert(tid, outer_id) != Some(outer_id);
        (self.off_by(ts) && changed).then_some(Event::PollInside { ts, tid, id: outer_id })
    }
}
