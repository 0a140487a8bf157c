//! How much task detail a recording takes, within a CPU budget. Exact polls
//! cost a probe hit per poll (and per wake); task identity (Tokio's task id
//! read at switch-outs and samples) costs nothing per poll. `--polls auto`
//! starts exact, measures the target's poll and wake rates against its own
//! CPU for a moment, and keeps only what fits `--overhead-budget`.

use crate::cli::PollTier;

/// What one probe hit costs the target on this kernel, measured by `cargo
/// xtask bench` (BENCHMARKS.md, "Cost per poll"): a poll is an entry
/// uprobe and a return probe with our programs, a wake one uprobe.
pub const POLL_COST_NS: u64 = 1_500;
pub const WAKE_COST_NS: u64 = 700;

/// Exact polls costing less than this much CPU per second are kept
/// whatever the target's own use: 2% of a mostly idle program is next to
/// nothing, and the budget is there to protect busy ones (0.2% of a CPU).
const FLOOR_NS_PER_S: f64 = 2_000_000.0;

/// How long auto measures before deciding (longer while the task id's
/// place in CONTEXT is still being learned, which needs exact polls).
const MEASURE_NS: u64 = 1_000_000_000;
const MEASURE_MAX_NS: u64 = 3_000_000_000;

/// What to keep after measuring.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub polls: bool,
    pub wakes: bool,
    /// One line for the user.
    pub line: String,
}

pub struct Auto {
    budget_pct: f64,
    start_ns: u64,
    cpu_at_start_ns: u64,
    polls: u64,
    wakes: u64,
    decided: bool,
}

impl Auto {
    pub fn new(tier: PollTier, budget_pct: f64, start_ns: u64, cpu_at_start_ns: u64) -> Auto {
        Auto { budget_pct, start_ns, cpu_at_start_ns, polls: 0, wakes: 0, decided: tier != PollTier::Auto }
    }

    pub fn count(&mut self, polls: u64, wakes: u64) {
        self.polls += polls;
        self.wakes += wakes;
    }

    /// Time to decide? Once measured long enough (and calibrated, or out of
    /// patience), returns what to keep, once.
    pub fn decide(&mut self, now_ns: u64, cpu_now_ns: u64, calibrated: bool) -> Option<Choice> {
        let elapsed = now_ns.saturating_sub(self.start_ns);
        if self.decided || elapsed < MEASURE_NS || (!calibrated && elapsed < MEASURE_MAX_NS) {
            return None;
        }
        self.decided = true;
        let seconds = elapsed as f64 / 1e9;
        let cpu_ns = cpu_now_ns.saturating_sub(self.cpu_at_start_ns).max(1) as f64;
        let poll_share = self.polls as f64 * POLL_COST_NS as f64 * 100.0 / cpu_ns;
        let wake_share = self.wakes as f64 * WAKE_COST_NS as f64 * 100.0 / cpu_ns;
        let rate = |n: u64| {
            let per_s = n as f64 / seconds;
            if per_s >= 1000.0 { format!("{:.0}k/s", per_s / 1000.0) } else { format!("{per_s:.0}/s") }
        };
        let (polls, wakes) = (rate(self.polls), rate(self.wakes));
        let (poll_cost, wake_cost) = (self.polls as f64 * POLL_COST_NS as f64 / seconds, self.wakes as f64 * WAKE_COST_NS as f64 / seconds);
        let budget = self.budget_pct;
        // A budget of 0 means no exact polls once the task id is found.
        let fits = |share: f64, cost: f64| share <= budget || (budget > 0.0 && cost <= FLOOR_NS_PER_S);
        Some(if fits(poll_share + wake_share, poll_cost + wake_cost) {
            Choice { polls: true, wakes: true, line: format!("polls: {polls} and wakes {wakes} cost ~{:.1}% of the target's CPU ({:.1} ms/s), within budget: recording every poll", poll_share + wake_share, (poll_cost + wake_cost) / 1e6) }
        } else if fits(poll_share, poll_cost) {
            Choice { polls: true, wakes: false, line: format!("polls: {polls} cost ~{poll_share:.1}% of the target's CPU; wakes ({wakes}) would add {wake_share:.1}%, over the {budget}% budget: recording every poll, no wakes (--polls on to force)") }
        } else {
            Choice { polls: false, wakes: false, line: format!("polls: {polls} would cost ~{poll_share:.0}% CPU; recording task identity at switches and samples (--polls on to force)") }
        })
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
        assert_eq!(low.decide(S / 2, S / 2, true), None, "still measuring");
        let c = low.decide(S, S, true).unwrap();
        assert!(c.polls && c.wakes, "{c:?}");
        assert_eq!(low.decide(2 * S, 2 * S, true), None, "decides once");
        // 400k polls/s: 60%.
        let mut high = Auto::new(PollTier::Auto, 2.0, 0, 0);
        high.count(400_000, 400_000);
        let c = high.decide(S, S, true).unwrap();
        assert!(!c.polls && !c.wakes);
        assert!(c.line.starts_with("polls: 400k/s would cost ~60% CPU"), "{}", c.line);
    }

    #[test]
    fn drops_wakes_first_and_waits_for_calibration() {
        let mut a = Auto::new(PollTier::Auto, 2.0, 0, 0);
        a.count(30_000, 60_000); // over 3 s of CPU: 1.5% + 1.4%
        assert_eq!(a.decide(S, S, false), None, "not calibrated yet");
        let c = a.decide(3 * S, 3 * S, false).unwrap();
        assert!(c.polls && !c.wakes, "{c:?}");
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
