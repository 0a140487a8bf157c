//! The bundled demo: a 2-worker Tokio app whose behaviour is known, so a
//! profile of it can be checked against the truth.
//!
//! Every 500 ms one poll burns ~30 ms of CPU (`cpu_heavy_poll`), and between
//! those, another poll blocks the worker in `nanosleep` for 40 ms
//! (`block_in_syscall`). Short tasks run every 5 ms (`short_task`). Every
//! 4 s the app idles for 1 s (`idle_phase`): workers have nothing to do.
//!
//! `demo-app [SECONDS]` exits after SECONDS (default: run until killed).
//! Other shapes of known truth: `--yield-loop N`, `--lock-contention SECONDS`,
//! `--two-waits SECONDS`,
//! `--custom-names N`, `--current-thread N`, `--two-runtimes N`,
//! `--block-in-place N`, `--local-set N` (see `shapes`); `--serve PORT
//! WORK_US` answers redis-benchmark's PING at a known CPU cost (`server`).
//! `--stall-once AT [SECONDS]` is the demo plus one stall: at AT seconds a
//! task blocks its worker for 200 ms (`stall_once`), once (the flight
//! recorder's test).

mod server;
mod shapes;

use std::hint::black_box;
use std::time::{Duration, Instant};

pub const CPU_HEAVY_MS: u64 = 30;
pub const BLOCKING_MS: u64 = 40;
const CYCLE: Duration = Duration::from_secs(4);
const IDLE: Duration = Duration::from_secs(1);

/// Spins on arithmetic for `ms` of wall time: the CPU-heavy poll.
#[inline(never)]
#[unsafe(no_mangle)]
pub fn cpu_heavy_poll(ms: u64) -> u64 {
    let until = Instant::now() + Duration::from_millis(ms);
    let mut acc = 0u64;
    while Instant::now() < until {
        for i in 0..1_000u64 {
            acc = mix_step(acc, i);
        }
    }
    acc
}

/// Always inlined into `cpu_heavy_poll`: with debuginfo, profiles show it as
/// an inlined frame at its own source line.
/// The division is the loop's slowest instruction, so samples land in
/// this frame: without it, on one VM every sample fell on the range's
/// increment and compare around it (timer interrupts are taken at
/// instruction boundaries that depend on the host).
#[inline(always)]
fn mix_step(acc: u64, i: u64) -> u64 {
    black_box(acc.wrapping_mul(6364136223846793005).wrapping_add(i) ^ (acc % (i | 7)))
}

/// Blocks the worker thread in a syscall, as a careless sync call would.
/// (Returns the time slept so the sleep is not a tail call: this frame stays
/// on the stack, as a real caller's would.)
#[inline(never)]
#[unsafe(no_mangle)]
pub fn block_in_syscall(ms: u64) -> Duration {
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(ms));
    started.elapsed()
}

pub const STALL_MS: u64 = 200;

/// The one stall of `--stall-once`: a blocking call inside a poll. (Its
/// code differs from `block_in_syscall`'s, or the compiler merges the two
/// and the stack names either.)
#[inline(never)]
#[unsafe(no_mangle)]
pub fn stall_once(ms: u64) -> u64 {
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(ms));
    started.elapsed().as_micros() as u64
}

async fn stall_task(at: Duration) {
    tokio::time::sleep(at).await;
    black_box(stall_once(STALL_MS));
}

/// A few microseconds of work, like a well-behaved request handler.
#[inline(never)]
#[unsafe(no_mangle)]
pub fn short_task(seed: u64) -> u64 {
    (0..2_000u64).fold(seed, |a, i| black_box(a.rotate_left(5) ^ i))
}

/// Sleeps out the idle part of the 4 s cycle, if we are in it; then the
/// caller's ticker restarts, so no missed tick fires at once (which would
/// run its work twice in one poll).
#[inline(never)]
async fn idle_phase(started: Instant, tick: &mut tokio::time::Interval) -> bool {
    let into_cycle = Duration::from_nanos((started.elapsed().as_nanos() % CYCLE.as_nanos()) as u64);
    if into_cycle < CYCLE - IDLE {
        return false;
    }
    tokio::time::sleep(CYCLE - into_cycle).await;
    tick.reset();
    true
}

/// An interval that skips ticks it misses (a heavy poll can overrun one):
/// the default (burst) would run the work twice back to back in one poll.
fn ticker(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick
}

async fn cpu_heavy_loop(started: Instant) {
    let mut tick = ticker(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if idle_phase(started, &mut tick).await {
            continue;
        }
        black_box(cpu_heavy_poll(CPU_HEAVY_MS));
    }
}

async fn blocking_loop(started: Instant) {
    tokio::time::sleep(Duration::from_millis(250)).await;
    let mut tick = ticker(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if idle_phase(started, &mut tick).await {
            continue;
        }
        black_box(block_in_syscall(BLOCKING_MS));
    }
}

async fn short_task_loop(started: Instant) {
    let mut tick = ticker(Duration::from_millis(5));
    let mut n = 0u64;
    loop {
        tick.tick().await;
        if idle_phase(started, &mut tick).await {
            continue;
        }
        n += 1;
        tokio::spawn(async move { black_box(short_task(n)) });
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let first = args.next();
    if first.as_deref() == Some("--yield-loop") {
        return shapes::yield_loop(args.next().and_then(|s| s.parse().ok()).unwrap_or(1_000_000));
    }
    if first.as_deref() == Some("--yield-rate") {
        return shapes::yield_rate(args.next().and_then(|s| s.parse().ok()).unwrap_or(10.0));
    }
    if first.as_deref() == Some("--serve") {
        let port = args.next().and_then(|s| s.parse().ok()).unwrap_or(6400);
        return server::serve(port, args.next().and_then(|s| s.parse().ok()).unwrap_or(10));
    }
    if first.as_deref() == Some("--two-waits") {
        return shapes::two_waits(args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0));
    }
    if first.as_deref() == Some("--lock-contention") {
        return shapes::lock_contention(args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0));
    }
    let count = |arg: Option<String>| arg.and_then(|s| s.parse().ok()).unwrap_or(1_000);
    match first.as_deref() {
        Some("--custom-names") => return shapes::custom_names(count(args.next())),
        Some("--current-thread") => return shapes::current_thread(count(args.next())),
        Some("--two-runtimes") => return shapes::two_runtimes(count(args.next())),
        Some("--block-in-place") => return shapes::block_in_place(count(args.next())),
        Some("--local-set") => return shapes::local_set(count(args.next())),
        _ => {}
    }
    let stall_at = (first.as_deref() == Some("--stall-once")).then(|| args.next().and_then(|s| s.parse::<f64>().ok()).unwrap_or(8.0));
    let run_for = if stall_at.is_some() { args.next() } else { first }.and_then(|s| s.parse::<f64>().ok());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!("demo-app pid {}", std::process::id());
    runtime.block_on(async {
        let started = Instant::now();
        tokio::spawn(cpu_heavy_loop(started));
        tokio::spawn(blocking_loop(started));
        tokio::spawn(short_task_loop(started));
        if let Some(at) = stall_at {
            tokio::spawn(stall_task(Duration::from_secs_f64(at)));
        }
        match run_for {
            Some(secs) => tokio::time::sleep(Duration::from_secs_f64(secs)).await,
            None => std::future::pending().await,
        }
    });
}
