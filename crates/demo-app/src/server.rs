//! `demo-app --serve PORT WORK_US`: a minimal server that redis-benchmark
//! can drive (`-t ping`): every PING, inline or as a RESP array, burns
//! WORK_US of CPU in the connection's task and answers +PONG. For the
//! overhead benchmarks: the same load at a known CPU cost per request
//! (mini-redis costs what it costs, 7–9 µs).

use std::hint::black_box;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Spins for `work` of wall time: a request handler's CPU.
#[inline(never)]
#[unsafe(no_mangle)]
pub fn handle_request(work: Duration) -> u64 {
    let until = Instant::now() + work;
    let mut acc = 0u64;
    while Instant::now() < until {
        acc = black_box(acc.wrapping_mul(31).wrapping_add(7));
    }
    acc
}

/// Requests in `buf`: each `PING` (any case) is one.
fn pings(buf: &[u8]) -> usize {
    buf.windows(4).filter(|w| w.eq_ignore_ascii_case(b"PING")).count()
}

async fn connection(mut socket: tokio::net::TcpStream, work: Duration) {
    let mut buf = vec![0u8; 16 * 1024];
    // A PING can be split across reads: carry the last 3 bytes over.
    let mut carry = Vec::new();
    loop {
        let n = match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        carry.extend_from_slice(&buf[..n]);
        let count = pings(&carry);
        // Three bytes cannot hold a whole PING, so none is counted twice.
        carry.drain(..carry.len().saturating_sub(3));
        let mut reply = Vec::with_capacity(count * 7);
        for _ in 0..count {
            black_box(handle_request(work));
            reply.extend_from_slice(b"+PONG\r\n");
        }
        if socket.write_all(&reply).await.is_err() {
            return;
        }
    }
}

pub fn serve(port: u16, work_us: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        eprintln!("demo-app: serving PING on 127.0.0.1:{port}, {work_us} µs of CPU each");
        loop {
            let Ok((socket, _)) = listener.accept().await else { continue };
            let _ = socket.set_nodelay(true);
            tokio::spawn(connection(socket, Duration::from_micros(work_us)));
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_inline_and_array_pings() {
        assert_eq!(super::pings(b"PING\r\n*1\r\n$4\r\nping\r\n"), 2);
        assert_eq!(super::pings(b"PIN"), 0);
    }
}
