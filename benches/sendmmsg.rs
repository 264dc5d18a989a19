//! `cargo bench -p sabha --bench sendmmsg`: what the driver's send costs per
//! datagram on this machine, the kernel included — the part of a fan-out
//! listener-packet the media core cannot see.
//!
//! One sender socket sends 120-byte datagrams (an SRTP audio packet) to
//! 1,000 receiving sockets on 127.0.0.1 through the driver's own
//! [`udp_batch::BatchSender`], flushing every `batch` datagrams (64 is the
//! driver's). After each round of 1,000 the receivers are drained, so no
//! socket buffer overflows; the drain is measured apart. CPU time is the
//! thread's user and system time from `/proc/thread-self/stat` (10 ms
//! ticks, so a row runs for a second or more), and the thread's total run
//! time from `/proc/thread-self/schedstat` (ns). On loopback the receiving
//! socket's delivery runs in the sender's system call, so "send" includes
//! what a real NIC would do in its interrupt. Only loopback; bounded.

#[path = "../src/udp_batch.rs"]
#[allow(dead_code, unused_imports)]
mod udp_batch;

use std::net::UdpSocket;
use std::time::Instant;

use udp_batch::BatchSender;

const RECEIVERS: usize = 1_000;
const ROUNDS: usize = 400;
const DATAGRAM: usize = 120;

/// (user, system) CPU seconds and total run nanoseconds of this thread.
fn thread_cpu() -> (f64, f64, u64) {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
    // Fields after the ")" of the command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = 100.0; // USER_HZ on Linux
    let user = fields[11].parse::<f64>().expect("utime") / tick;
    let system = fields[12].parse::<f64>().expect("stime") / tick;
    let sched = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let run_ns = sched
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("run time");
    (user, system, run_ns)
}

struct Row {
    user_us: f64,
    system_us: f64,
    run_us: f64,
    drain_us: f64,
    sent: usize,
    dropped: usize,
}

fn row(batch: usize, sender: &UdpSocket, receivers: &[UdpSocket]) -> Row {
    let destinations: Vec<_> = receivers
        .iter()
        .map(|r| r.local_addr().expect("addr"))
        .collect();
    let mut out = BatchSender::default();
    let mut buf = [0u8; 2048];
    let (mut sent, mut dropped) = (0, 0);
    let (mut user, mut system, mut run, mut drain_ns) = (0.0, 0.0, 0u64, 0u64);
    for round in 0..ROUNDS {
        let before = thread_cpu();
        for (i, &to) in destinations.iter().enumerate() {
            let b = out.buffer();
            b[..DATAGRAM].fill((round + i) as u8);
            let full = out.commit(to, DATAGRAM);
            if full || (i + 1) % batch == 0 {
                let f = out.flush(sender);
                sent += f.sent;
                dropped += f.dropped;
            }
        }
        let f = out.flush(sender);
        sent += f.sent;
        dropped += f.dropped;
        let after = thread_cpu();
        user += after.0 - before.0;
        system += after.1 - before.1;
        run += after.2 - before.2;
        let started = Instant::now();
        for r in receivers {
            while r.recv_from(&mut buf).is_ok() {}
        }
        drain_ns += started.elapsed().as_nanos() as u64;
    }
    let n = (RECEIVERS * ROUNDS) as f64;
    Row {
        user_us: user * 1e6 / n,
        system_us: system * 1e6 / n,
        run_us: run as f64 / 1e3 / n,
        drain_us: drain_ns as f64 / 1e3 / n,
        sent,
        dropped,
    }
}

fn main() {
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sender.set_nonblocking(true).expect("nonblocking");
    let receivers: Vec<UdpSocket> = (0..RECEIVERS)
        .map(|_| {
            let r = UdpSocket::bind("127.0.0.1:0").expect("bind");
            r.set_nonblocking(true).expect("nonblocking");
            r
        })
        .collect();
    println!(
        "sendmmsg to {RECEIVERS} loopback sockets, {DATAGRAM}-byte datagrams, {} per row",
        RECEIVERS * ROUNDS
    );
    println!(
        "| datagrams per call | user µs/datagram | system µs/datagram | run µs/datagram | sent | dropped | receivers' drain µs/datagram |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for batch in [1, 8, 64] {
        let r = row(batch, &sender, &receivers);
        println!(
            "| {batch} | {:.2} | {:.2} | {:.2} | {} | {} | {:.2} |",
            r.user_us, r.system_us, r.run_us, r.sent, r.dropped, r.drain_us
        );
    }
}
