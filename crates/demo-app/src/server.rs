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

/// One complete command at the start of `buf`: whether it is a PING, and
/// its length in bytes. RESP arrays (`*1\r\n$4\r\nPING\r\n`) and inline
/// commands (`PING\r\n`), as redis-benchmark sends them. None: incomplete.
fn command(buf: &[u8]) -> Option<(bool, usize)> {
    let line_end = |from: usize| buf[from..].windows(2).position(|w| w == b"\r\n").map(|p| from + p);
    if buf.first() != Some(&b'*') {
        let end = line_end(0)?;
        return Some((buf[..end].trim_ascii().eq_ignore_ascii_case(b"PING"), end + 2));
    }
    let end = line_end(0)?;
    let count: usize = std::str::from_utf8(&buf[1..end]).ok()?.trim().parse().ok()?;
    let (mut at, mut first) = (end + 2, None);
    for _ in 0..count {
        let end = line_end(at)?;
        let len: usize = std::str::from_utf8(buf.get(at + 1..end)?).ok()?.trim().parse().ok()?;
        let arg = buf.get(end + 2..end + 2 + len)?;
        first.get_or_insert(arg);
        at = end + 2 + len + 2;
        if buf.len() < at {
            return None;
        }
    }
    Some((first.is_some_and(|a| a.eq_ignore_ascii_case(b"PING")), at))
}

async fn connection(mut socket: tokio::net::TcpStream, work: Duration) {
    let mut buf = vec![0u8; 16 * 1024];
    // Commands can be split across reads: what is left waits for the rest.
    let mut pending = Vec::new();
    loop {
        let n = match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let (mut reply, mut used) = (Vec::new(), 0);
        while let Some((ping, len)) = command(&pending[used..]) {
            used += len;
            if ping {
                black_box(handle_request(work));
                reply.extend_from_slice(b"+PONG\r\n");
            } else {
                // redis-benchmark asks for CONFIG first and waits for an answer.
                reply.extend_from_slice(b"-ERR only PING here\r\n");
            }
        }
        pending.drain(..used);
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
    use super::command;

    #[test]
    fn reads_inline_and_array_commands_whole_or_not_at_all() {
        assert_eq!(command(b"PING\r\n*1\r\n$4\r\nping\r\n"), Some((true, 6)));
        assert_eq!(command(b"*1\r\n$4\r\nping\r\n"), Some((true, 14)));
        let config = b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nsave\r\n";
        assert_eq!(command(config), Some((false, config.len())));
        assert_eq!(command(&config[..config.len() - 1]), None);
        assert_eq!(command(b"*1\r\n$4\r\nPI"), None);
        assert_eq!(command(b"PIN"), None);
    }
}
