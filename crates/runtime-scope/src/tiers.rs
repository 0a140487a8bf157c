//! How much task detail a recording takes, within a CPU budget. Exact polls
//! cost a probe hit per poll (and per wake); task identity (Tokio's task id
//! read at switch-outs and samples) costs nothing per poll. `--polls auto`
//! starts exact, measures the target's poll and wake rates against its own
//! CPU each second, and keeps only what fits `--overhead-budget`: wakes
//! go first, then poll returns (poll starts only, once Tokio's task id can
//! be read: `poll_returns`), then polls.

use crate::cli::PollTier;

/// What one probe hit costs the target on this kernel, measured by `cargo
/// xtask bench` (BENCHMARKS.md, "Cost per poll": 2.3 to 2.7 µs for a poll
/// and its wake in two runs on 2026-11-30, 6.18): a poll is an entry uprobe
/// and a return probe with our programs, a wake one uprobe. Rounded up: the
/// budget errs on the side of taking probes off.
pub const POLL_COST_NS: u64 = 1_700;
pub const WAKE_COST_NS: u64 = 1_000;
/// A poll's entry alone (`--polls starts`: 0.67 to 0.89 µs on 2026-12-02),
/// rounded up likewise.
pub const START_COST_NS: u64 = 1_000;

/// Exact polls costing less than this much CPU per second are kept
/// whatever the target's own use: 2% of a mostly idle program is next to
/// nothing, and the budget is there to protect busy ones (0.2% of a CPU).
const FLOOR_NS_PER_S: f64 = 2_000_000.0;

/// How long auto measures before deciding (longer while the task id's
/// place in CONTEXT is still being learned, which needs exact polls). The
/// first look is short: on a busy server a quarter second holds tens of
/// thousands of polls, and every second of probes it would cost is paid
/// by the target; later looks, which only ever take probes off, are a
/// second apart.
const FIRST_MEASURE_NS: u64 = 250_000_000;
/// A look that has seen this many polls decides after
/// [`EARLY_MEASURE_NS`]: a rate is known to a few percent, and on a busy
/// server each further 100 ms of probes is thousands of trapped polls
/// (mini-redis under load: 20 000 polls, ~40 ms of its CPU, before the
/// 250 ms look ended). A quieter target is looked at for the full 250 ms,
/// then every second.
const EARLY_POLLS: u64 = 2_000;
const EARLY_MEASURE_NS: u64 = 50_000_000;
const MEASURE_NS: u64 = 1_000_000_000;
const MEASURE_MAX_NS: u64 = 3_000_000_000;

/// What to keep after measuring.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub polls: bool,
    /// False: poll starts only (their returns come off; lengths are then
    /// upper bounds).
    pub returns: bool,
    pub wakes: bool,
    /// One line for the user.
    pub line: String,
}

pub struct Auto {
    budget_pct: f64,
    /// Still exact: (polls, wakes). Auto only ever takes probes off.
    kept: (bool, bool),
    /// Poll returns still on (off: poll starts only).
    returns: bool,
    first: bool,
    /// The window being measured: its start, the target's CPU then, and
    /// the polls and wakes seen since.
    since_ns: u64,
    cpu_since_ns: u64,
    polls: u64,
    wakes: u64,
    start_ns: u64,
}

impl Auto {
    pub fn new(tier: PollTier, budget_pct: f64, start_ns: u64, cpu_at_start_ns: u64) -> Auto {
        let on = tier == PollTier::Auto;
        Auto { budget_pct, kept: (on, on), returns: on, first: true, since_ns: start_ns, cpu_since_ns: cpu_at_start_ns, polls: 0, wakes: 0, start_ns }
    }

    pub fn count(&mut self, polls: u64, wakes: u64) {
        self.polls += polls;
        self.wakes += wakes;
    }

    /// Whether the first decision is still to come (the recorder looks
    /// more often meanwhile: a busy target decides after 50 ms).
    pub fn first_look(&self) -> bool {
        self.first && self.judging()
    }

    /// Whether auto still has probes it may take off.
    pub fn judging(&self) -> bool {
        self.kept.0 || self.kept.1
    }

    /// Every second while exact probes run: what to keep. Returns a choice
    /// the first time (once the task id's place is known, or out of
    /// patience) and whenever the rate grows past the budget; auto never
    /// puts probes back on (a busy server attached in a quiet moment must
    /// not keep paying per poll once it is busy again).
    pub fn decide(&mut self, now_ns: u64, cpu_now_ns: u64, calibrated: bool) -> Option<Choice> {
        if !self.judging() {
            return None;
        }
        let elapsed = now_ns.saturating_sub(self.since_ns);
        let waited = now_ns.saturating_sub(self.start_ns);
        // Busy now: judged at once, the first look or a later one (a target
        // kept exact while idle that gets busy pays every poll until then).
        let window = if self.polls >= EARLY_POLLS {
            EARLY_MEASURE_NS
        } else if self.first {
            FIRST_MEASURE_NS
        } else {
            MEASURE_NS
        };
        if elapsed < window || (self.first && !calibrated && waited < MEASURE_MAX_NS) {
            return None;
        }
        let seconds = elapsed as f64 / 1e9;
        let cpu_ns = cpu_now_ns.saturating_sub(self.cpu_since_ns).max(1) as f64;
        let (polls, wakes) = (std::mem::take(&mut self.polls), std::mem::take(&mut self.wakes));
        (self.since_ns, self.cpu_since_ns) = (now_ns, cpu_now_ns);
        let per_poll = if self.returns { POLL_COST_NS } else { START_COST_NS };
        let poll_cost = polls as f64 * per_poll as f64 / seconds;
        let start_cost = polls as f64 * START_COST_NS as f64 / seconds;
        let wake_cost = if self.kept.1 { wakes as f64 * WAKE_COST_NS as f64 / seconds } else { 0.0 };
        let per_s_cpu = cpu_ns / seconds;
        let (poll_share, wake_share) = (poll_cost * 100.0 / per_s_cpu, wake_cost * 100.0 / per_s_cpu);
        let start_share = start_cost * 100.0 / per_s_cpu;
        let rate = |n: u64| {
            let per_s = n as f64 / seconds;
            if per_s >= 1000.0 { format!("{:.0}k/s", per_s / 1000.0) } else { format!("{per_s:.0}/s") }
        };
        let budget = self.budget_pct;
        // A budget of 0 means no exact polls once the task id is found.
        let fits = |share: f64, cost: f64| share <= budget || (budget > 0.0 && cost <= FLOOR_NS_PER_S);
        // Poll starts alone need Tokio's task id: it is what ends a poll.
        let (now, returns) = if fits(poll_share + wake_share, poll_cost + wake_cost) {
            (self.kept, self.returns)
        } else if fits(poll_share, poll_cost) {
            ((true, false), self.returns)
        } else if calibrated && fits(start_share, start_cost) {
            ((true, false), false)
        } else {
            ((false, false), false)
        };
        let first = std::mem::replace(&mut self.first, false);
        if !first && now == self.kept && returns == self.returns {
            return None;
        }
        let returns_were_on = std::mem::replace(&mut self.returns, returns);
        let wakes_were_on = std::mem::replace(&mut self.kept, now).1;
        let (polls, wakes) = (rate(polls), rate(wakes));
        let line = match now {
            (true, _) if !returns && returns_were_on => format!(
                "polls: {polls} cost ~{poll_share:.1}% of the target's CPU with their returns{}, over the {budget}% budget; their starts alone ~{start_share:.1}%: recording poll starts only, so poll lengths are upper bounds (--polls on to force)",
                if wakes_were_on { format!(" and wakes ({wakes}) {wake_share:.1}% more") } else { String::new() }
            ),
            (true, true) => format!(
                "polls: {polls} and wakes {wakes} cost ~{:.1}% of the target's CPU ({:.1} ms/s), within budget: recording every poll",
                poll_share + wake_share,
                (poll_cost + wake_cost) / 1e6
            ),
            (true, false) if wakes_were_on => format!(
                "polls: {polls} cost ~{poll_share:.1}% of the target's CPU; wakes ({wakes}) would add {wake_share:.1}%, over the {budget}% budget: recording every poll, no wakes (--polls on to force)"
            ),
            (true, false) => format!("polls: {polls} cost ~{poll_share:.1}% of the target's CPU: recording every poll, no wakes (--polls on to force)"),
            (false, _) => format!(
                "polls: {polls} would cost ~{poll_share:.0}% CPU; recording task identity at switches and samples (--polls on to force)"
            ),
        };
        Some(Choice { polls: now.0, returns: now.0 && returns, wakes: now.1, line })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn keeps_a_low_rate_and_declines_a_high_one() {
        // 1000 polls/s on a target using a whole CPU: 0.15%.
        let mut low = Auto::new(PollTier::Auto, 2.0, 0, 0);
        low.count(1000, 500);
        assert_eq!(low.decide(S / 8, S / 8, true), None, "still measuring");
        let c = low.decide(S / 4, S / 4, true).unwrap();
        assert!(c.polls && c.wakes, "{c:?}");
        assert_eq!(low.decide(S, S, true), None, "next look a second later");
        low.count(1000, 500);
        assert_eq!(low.decide(2 * S, 2 * S, true), None, "nothing changed: nothing said");
        // Then the server gets busy: 300k polls in a second of its CPU.
        low.count(300_000, 0);
        let c = low.decide(3 * S, 3 * S, true).unwrap();
        assert!(!c.polls && !c.wakes, "{c:?}");
        low.count(1, 0);
        assert_eq!(low.decide(10 * S, 10 * S, true), None, "never back on");
        // 400k polls/s in a second of CPU: 400k × the per-poll cost.
        let mut high = Auto::new(PollTier::Auto, 2.0, 0, 0);
        high.count(100_000, 100_000);
        let c = high.decide(S / 4, S / 4, true).unwrap();
        assert!(!c.polls && !c.wakes);
        let pct = 400_000 * POLL_COST_NS / 10_000_000;
        assert!(c.line.starts_with(&format!("polls: 400k/s would cost ~{pct}% CPU")), "{}", c.line);
    }

    #[test]
    fn a_busy_target_is_judged_after_50_ms() {
        let ms = |n: u64| n * 1_000_000;
        let mut busy = Auto::new(PollTier::Auto, 2.0, 0, 0);
        busy.count(EARLY_POLLS - 1, 0);
        assert_eq!(busy.decide(ms(60), ms(60), true), None, "under {EARLY_POLLS} polls: the full 250 ms");
        busy.count(1, 0);
        assert_eq!(busy.decide(ms(40), ms(40), true), None, "not before 50 ms");
        assert_eq!(busy.decide(ms(60), ms(60), false), None, "nor before the task id's place is known");
        assert!(busy.first_look());
        let c = busy.decide(ms(60), ms(60), true).unwrap();
        assert!(!c.polls && !c.wakes, "2000 polls in 60 ms of CPU: {c:?}");
        assert!(!busy.first_look());
    }

    #[test]
    fn a_target_kept_exact_while_idle_is_judged_again_as_soon_as_it_is_busy() {
        let ms = |n: u64| n * 1_000_000;
        let mut a = Auto::new(PollTier::Auto, 2.0, 0, 0);
        a.count(100, 100);
        assert!(a.decide(ms(250), ms(1), true).unwrap().polls, "idle: kept");
        assert_eq!(a.decide(ms(300), ms(30), true), None);
        a.count(EARLY_POLLS, 0);
        let c = a.decide(ms(350), ms(100), true).unwrap();
        assert!(!c.polls, "100 ms into the load, not a second: {c:?}");
    }

    #[test]
    fn drops_wakes_first_and_waits_for_calibration() {
        let mut a = Auto::new(PollTier::Auto, 2.0, 0, 0);
        a.count(30_000, 60_000); // over 3 s of CPU: 1.7% + 2.0%
        assert_eq!(a.decide(S, S, false), None, "not calibrated yet");
        let c = a.decide(3 * S, 3 * S, false).unwrap();
        assert!(c.polls && !c.wakes, "{c:?}");
    }

    /// 15k polls/s on a target using a whole CPU: 2.6% with their returns,
    /// 1.5% as starts alone.
    #[test]
    fn over_budget_with_returns_keeps_poll_starts_where_the_task_id_is_known() {
        let mut a = Auto::new(PollTier::Auto, 2.0, 0, 0);
        a.count(15_000, 15_000);
        let c = a.decide(S, S, true).unwrap();
        assert!(c.polls && !c.returns && !c.wakes, "{c:?}");
        assert!(c.line.contains("recording poll starts only"), "{}", c.line);
        a.count(15_000, 0);
        assert_eq!(a.decide(2 * S, 2 * S, true), None, "still fits as starts: nothing said");
        a.count(30_000, 0);
        let c = a.decide(3 * S, 3 * S, true).unwrap();
        assert!(!c.polls, "30k starts a second: 3%: {c:?}");

        // Without the task id nothing could end a poll: off instead.
        let mut blind = Auto::new(PollTier::Auto, 2.0, 0, 0);
        blind.count(45_000, 45_000);
        let c = blind.decide(3 * S, 3 * S, false).unwrap();
        assert!(!c.polls && !c.returns, "{c:?}");
    }

    #[test]
    fn a_quiet_program_keeps_exact_polls() {
        // 400 polls/s of 1.5 µs on a target using 20 ms of CPU a second: 3%,
        // but 0.6 ms of CPU a second.
        let mut a = Auto::new(PollTier::Auto, 2.0, 0, 0);
        a.count(400, 200);
        let c = a.decide(S, S / 50, true).unwrap();
        assert!(c.polls && c.wakes, "{c:?}");
    }

    #[test]
    fn fixed_tiers_never_decide() {
        let mut on = Auto::new(PollTier::On, 2.0, 0, 0);
        on.count(1_000_000, 0);
        assert_eq!(on.decide(10 * S, S, true), None);
    }
}
