//! Programs of known shape for the profiler's tests and benchmarks.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `demo-app --yield-loop N`: one task yielding N times, for measuring the
/// cost of a poll (and of probing it); prints ns per iteration.
pub fn yield_loop(n: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().expect("tokio runtime");
    let per_poll = runtime.block_on(async move {
        tokio::spawn(async move {
            // Ground truth for the profiler's task ids.
            println!("yield-loop task-id {}", tokio::task::id());
            let started = Instant::now();
            for _ in 0..n {
                tokio::task::yield_now().await;
            }
            started.elapsed().as_nanos() as f64 / n as f64
        })
        .await
        .expect("yield task")
    });
    println!("yield-loop ns-per-poll {per_poll:.1}");
}

/// `demo-app --yield-rate SECONDS`: yields for that long and prints
/// `yields/s N` every 250 ms, so a test can see the target's own speed
/// before, while and after it is profiled.
pub fn yield_rate(secs: f64) {
    use std::io::Write;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().expect("tokio runtime");
    runtime.block_on(async move {
        tokio::spawn(async move {
            let until = Instant::now() + std::time::Duration::from_secs_f64(secs);
            let (mut mark, mut count) = (Instant::now(), 0u64);
            while Instant::now() < until {
                tokio::task::yield_now().await;
                count += 1;
                if count % 1024 == 0 && mark.elapsed().as_millis() >= 250 {
                    println!("yields/s {:.0}", count as f64 / mark.elapsed().as_secs_f64());
                    let _ = std::io::stdout().flush();
                    (mark, count) = (Instant::now(), 0);
                }
            }
        })
        .await
        .expect("yield task")
    });
}

/// Spawns a task that yields `n` times (so `n + 1` polls) and waits for it.
async fn yield_task(n: u64) -> u64 {
    tokio::spawn(async move {
        for _ in 0..n {
            tokio::task::yield_now().await;
        }
        n
    })
    .await
    .expect("yield task")
}

/// `demo-app --custom-names N`: 3 workers named `api-worker` and 4
/// `spawn_blocking` calls, whose pool threads get that name too: only what
/// a thread runs tells a worker from a blocking thread. One task yields N
/// times meanwhile.
pub fn custom_names(n: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(3)
        .thread_name("api-worker")
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        // Started together and sleeping, so each needs a thread of its own.
        let blocking: Vec<_> =
            (0..4u64).map(|i| tokio::task::spawn_blocking(move || std::thread::sleep(Duration::from_millis(50 + i)))).collect();
        yield_task(n).await;
        for b in blocking {
            b.await.expect("blocking call");
        }
    });
    println!("custom-names done");
}

/// `demo-app --current-thread N`: a current_thread runtime, so tasks run
/// on the thread that called `block_on` (here: the main thread).
pub fn current_thread(n: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("tokio runtime");
    runtime.block_on(yield_task(n));
    println!("current-thread done");
}

/// `demo-app --local-set N`: a `LocalSet` on a current_thread runtime; a
/// `spawn_local` task yields N times. It keeps an `Rc` (what LocalSets are
/// for), which also gives it drop code of its own: a task whose code is
/// byte-identical to another's (`yield_task`) is merged with it by the
/// compiler and cannot be told apart in the binary.
pub fn local_set(n: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    let polls = local.block_on(&runtime, async move {
        tokio::task::spawn_local(async move {
            let count = std::rc::Rc::new(std::cell::Cell::new(0u64));
            for _ in 0..n {
                count.set(count.get() + 1);
                tokio::task::yield_now().await;
            }
            count.get()
        })
        .await
        .expect("local task")
    });
    println!("local-set done ({polls} yields)");
}

/// `demo-app --two-runtimes N`: two 2-worker runtimes in one process, each
/// running a task that yields N times.
pub fn two_runtimes(n: u64) {
    let build = || tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().expect("tokio runtime");
    let (first, second) = (build(), build());
    let other = std::thread::spawn(move || second.block_on(yield_task(n)));
    first.block_on(yield_task(n));
    other.join().expect("second runtime's thread");
    println!("two-runtimes done");
}

/// `demo-app --block-in-place N`: one worker; a task calls
/// `block_in_place` N times, each sleeping 30 ms. Tokio hands the worker's
/// core to another thread meanwhile, so the runtime keeps going (a second
/// task ticks every millisecond throughout).
pub fn block_in_place(n: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_time().build().expect("tokio runtime");
    runtime.block_on(async move {
        let ticker = tokio::spawn(tick_every_ms());
        tokio::spawn(async move {
            for _ in 0..n {
                tokio::task::block_in_place(sleep_in_place);
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("block_in_place task");
        ticker.abort();
    });
    println!("block-in-place done");
}

async fn tick_every_ms() {
    loop {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[inline(never)]
fn sleep_in_place() {
    std::thread::sleep(Duration::from_millis(HOLD_MS));
}

pub const HOLD_MS: u64 = 30;
const PERIOD_MS: u64 = 100;

static LOCK: Mutex<u64> = Mutex::new(0);

/// Takes the lock a plain thread holds for 30 ms of every 100: the worker
/// blocks on a futex inside the poll, and the holder's unlock wakes it.
#[inline(never)]
#[unsafe(no_mangle)]
pub fn wait_for_lock() -> u64 {
    let mut guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    *guard += 1;
    *guard
}

/// `demo-app --lock-contention SECONDS`: a thread named `lock-holder`
/// holds a `std::sync::Mutex` 30 ms of every 100 ms; a task on a 1-worker
/// runtime takes it every 100 ms, 10 ms into each hold.
pub fn lock_contention(secs: f64) {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let holder = std::thread::Builder::new()
        .name("lock-holder".into())
        .spawn(move || {
            while Instant::now() < until {
                let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
                std::thread::sleep(Duration::from_millis(HOLD_MS));
                drop(guard);
                std::thread::sleep(Duration::from_millis(PERIOD_MS - HOLD_MS));
            }
        })
        .expect("lock-holder thread");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("tokio runtime");
    println!("demo-app pid {} (lock contention)", std::process::id());
    runtime.block_on(async move {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let mut tick = tokio::time::interval(Duration::from_millis(PERIOD_MS));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while Instant::now() < until {
                tick.tick().await;
                std::hint::black_box(wait_for_lock());
            }
        })
        .await
        .expect("lock task");
    });
    holder.join().expect("lock-holder");
}

/// Blocks its worker for a short while. Shaped exactly like
/// [`block_longer`], so the two wait at the same place in libc with the
/// same stack pointer: only the return addresses above tell them apart.
#[inline(never)]
#[unsafe(no_mangle)]
pub fn block_briefly() {
    std::thread::sleep(Duration::from_millis(std::hint::black_box(TWO_WAITS_MS[0])));
}

#[inline(never)]
#[unsafe(no_mangle)]
pub fn block_longer() {
    std::thread::sleep(Duration::from_millis(std::hint::black_box(TWO_WAITS_MS[1])));
}

/// How long [`block_briefly`] and [`block_longer`] sleep.
pub const TWO_WAITS_MS: [u64; 2] = [2, 25];

/// `demo-app --two-waits SECONDS`: one task on a 1-worker runtime blocks
/// its worker in `block_briefly`, yields, blocks in `block_longer`, yields,
/// and so on: a thread alternating between two waits that look alike to
/// the kernel. Each blocked stretch's stack must name the right one.
pub fn two_waits(secs: f64) {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("tokio runtime");
    println!("demo-app pid {} (two waits)", std::process::id());
    runtime.block_on(async move {
        tokio::spawn(async move {
            while Instant::now() < until {
                block_briefly();
                tokio::task::yield_now().await;
                block_longer();
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("two-waits task");
    });
}
