//! The shapes, each a small runtime that runs for the given time.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub const ALL: [&str; 7] = ["alias", "generic", "instrumented", "nested", "local", "blocking", "current-thread"];

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// Spins for `ms` of wall time.
#[inline(never)]
pub fn burn_cpu(ms: u64) -> u64 {
    let until = Instant::now() + Duration::from_millis(ms);
    let mut acc = 0u64;
    while Instant::now() < until {
        for i in 0..1_000u64 {
            acc = black_box(acc.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
    acc
}

#[inline(never)]
fn tick_work(n: u64) -> u64 {
    black_box(n.rotate_left(7) ^ 0x5a)
}

#[inline(never)]
fn sleepy_work(n: u64) -> u64 {
    black_box(n.wrapping_mul(3) + 1)
}

// Three futures of the same layout (a `Sleep` and a counter): their drop
// glue is the same code, merged into one function with three names.
async fn ticker() {
    let mut n = 0u64;
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        n = tick_work(n);
    }
}

async fn hog_cpu() {
    let mut n = 0u64;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        n = black_box(n.wrapping_add(burn_cpu(30)));
    }
}

async fn sleepy_poll() {
    let mut n = 0u64;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        n = sleepy_work(n);
    }
}

pub fn alias(run_for: Duration) {
    multi_thread().block_on(async {
        tokio::spawn(ticker());
        tokio::spawn(hog_cpu());
        tokio::spawn(sleepy_poll());
        tokio::time::sleep(run_for).await;
    });
}

/// Where a relay reads from: two implementations, so `relay::<T>` has two
/// instances that differ only in `T`.
pub trait Source: Send + 'static {
    fn next(&mut self) -> u64;
}

pub struct Counter(u64);
pub struct Doubler(u64);

impl Source for Counter {
    fn next(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}

impl Source for Doubler {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(2) | 1;
        self.0
    }
}

async fn relay<T: Source>(mut source: T, period: Duration) {
    loop {
        black_box(source.next());
        tokio::time::sleep(period).await;
    }
}

/// A hand-written future, generic too: `Pump<Counter>` and `Pump<Doubler>`.
pub struct Pump<T> {
    source: T,
    left: u32,
}

impl<T: Source + Unpin> Future for Pump<T> {
    type Output = u64;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u64> {
        let v = self.source.next();
        if self.left == 0 {
            return Poll::Ready(v);
        }
        self.left -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

pub fn generic(run_for: Duration) {
    multi_thread().block_on(async {
        tokio::spawn(relay(Counter(0), Duration::from_millis(5)));
        tokio::spawn(relay(Doubler(1), Duration::from_millis(7)));
        let a = tokio::spawn(Pump { source: Counter(0), left: 100 });
        let b = tokio::spawn(Pump { source: Doubler(1), left: 100 });
        black_box((a.await.ok(), b.await.ok()));
        tokio::time::sleep(run_for).await;
    });
}

/// A connection handler as servers write it, spawned inside a span.
async fn handle_connection(id: u64, rx: tokio::sync::mpsc::Receiver<u64>) -> u64 {
    let mut rx = rx;
    let mut total = id;
    while let Some(v) = rx.recv().await {
        total = total.wrapping_add(v);
    }
    total
}

pub fn instrumented(run_for: Duration) {
    use tracing::Instrument;
    multi_thread().block_on(async {
        let mut senders = Vec::new();
        for id in 0..4 {
            let (tx, rx) = tokio::sync::mpsc::channel(8);
            senders.push(tx);
            tokio::spawn(handle_connection(id, rx).instrument(tracing::info_span!("connection", id)));
        }
        let until = Instant::now() + run_for;
        while Instant::now() < until {
            for tx in &senders {
                let _ = tx.send(1).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
}

/// Spawns two different async blocks per round from inside one `async fn`.
async fn accept_loop(run_for: Duration) {
    let until = Instant::now() + run_for;
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            black_box(tick_work(n))
        });
        let label = format!("request {n}");
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            black_box(label.len())
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn nested(run_for: Duration) {
    multi_thread().block_on(async {
        tokio::spawn(accept_loop(run_for)).await.expect("accept loop");
    });
}

async fn local_job(n: u64) -> u64 {
    let shared = std::rc::Rc::new(n);
    tokio::time::sleep(Duration::from_millis(2)).await;
    black_box(*shared)
}

pub fn local(run_for: Duration) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let set = tokio::task::LocalSet::new();
    set.block_on(&runtime, async {
        let until = Instant::now() + run_for;
        let mut n = 0;
        while Instant::now() < until {
            n += 1;
            tokio::task::spawn_local(local_job(n));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
}

#[inline(never)]
fn checksum_file(n: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(3));
    black_box(n.wrapping_mul(31))
}

pub fn blocking(run_for: Duration) {
    multi_thread().block_on(async {
        let until = Instant::now() + run_for;
        let mut n = 0;
        while Instant::now() < until {
            n += 1;
            let a = tokio::task::spawn_blocking(move || checksum_file(n));
            let b = tokio::task::spawn_blocking(move || burn_cpu(2));
            black_box((a.await.ok(), b.await.ok()));
        }
    });
}

/// A job spawned on both a current_thread and a multi-thread runtime: one
/// future, two schedulers, two `raw::poll` instances.
async fn tally(n: u64) -> u64 {
    tokio::task::yield_now().await;
    black_box(n + 1)
}

pub fn current_thread(run_for: Duration) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async {
        let until = Instant::now() + run_for;
        let mut n = 0;
        while Instant::now() < until {
            n = tokio::spawn(tally(n)).await.expect("tally");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    multi_thread().block_on(async { black_box(tokio::spawn(tally(1)).await.ok()) });
}
