//! Sends many datagrams with one system call.
//!
//! Fan-out sends one datagram per listener per frame; at thousands of
//! listeners the per-call syscall cost dominates. On Linux the batch goes out
//! with `sendmmsg` (through nix's safe wrapper, so the crate keeps
//! `forbid(unsafe_code)`); elsewhere it falls back to one `send_to` each.
//! Sends never wait: when the socket buffer is full the rest of the batch is
//! dropped and counted, so one congested moment cannot stall the mixer.
//!
//! It takes a plain non-blocking `std` socket (a clone of the driver's): a
//! send never waits, so tokio's readiness tracking has nothing to add — and
//! it would report "would block" until the reactor first saw the socket
//! writable, dropping the first datagrams.

use std::net::UdpSocket;

use sabha_media::Transmit;

/// Datagrams per system call.
pub const BATCH: usize = 64;

/// What one flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub sent: usize,
    pub dropped: usize,
}

pub struct BatchSender {
    pending: Vec<Transmit>,
    #[cfg(target_os = "linux")]
    linux: linux::Headers,
}

impl Default for BatchSender {
    fn default() -> Self {
        Self {
            pending: Vec::with_capacity(BATCH),
            #[cfg(target_os = "linux")]
            linux: linux::Headers::new(),
        }
    }
}

impl BatchSender {
    /// Queues a datagram; returns true when the batch is full and should be flushed.
    pub fn push(&mut self, transmit: Transmit) -> bool {
        self.pending.push(transmit);
        self.pending.len() >= BATCH
    }

    /// Sends everything queued, without waiting.
    pub fn flush(&mut self, socket: &UdpSocket) -> Flushed {
        if self.pending.is_empty() {
            return Flushed::default();
        }
        #[cfg(target_os = "linux")]
        let sent = self.linux.send_all(socket, &self.pending);
        #[cfg(not(target_os = "linux"))]
        let sent = send_each(socket, &self.pending);
        let flushed = Flushed {
            sent,
            dropped: self.pending.len() - sent,
        };
        self.pending.clear();
        flushed
    }
}

#[cfg(not(target_os = "linux"))]
fn send_each(socket: &UdpSocket, pending: &[Transmit]) -> usize {
    pending
        .iter()
        .take_while(|t| socket.send_to(&t.contents, t.destination).is_ok())
        .count()
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};

    use super::{BATCH, Transmit, UdpSocket};

    /// The kernel headers of one batch, allocated once.
    pub struct Headers {
        headers: MultiHeaders<SockaddrStorage>,
        addrs: Vec<Option<SockaddrStorage>>,
    }

    impl Headers {
        pub fn new() -> Self {
            Self {
                headers: MultiHeaders::preallocate(BATCH, None),
                addrs: Vec::with_capacity(BATCH),
            }
        }

        /// Sends `pending` in as few calls as the kernel allows; returns how
        /// many went out before the socket would have blocked.
        pub fn send_all(&mut self, socket: &UdpSocket, pending: &[Transmit]) -> usize {
            let mut sent = 0;
            while sent < pending.len() {
                match self.send_some(socket, &pending[sent..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sent += n,
                }
            }
            sent
        }

        /// One `sendmmsg`; `Err` when the socket buffer is full (EAGAIN).
        fn send_some(&mut self, socket: &UdpSocket, pending: &[Transmit]) -> nix::Result<usize> {
            let pending = &pending[..pending.len().min(BATCH)];
            let slices: Vec<[IoSlice<'_>; 1]> = pending
                .iter()
                .map(|t| [IoSlice::new(&t.contents)])
                .collect();
            self.addrs.clear();
            self.addrs.extend(
                pending
                    .iter()
                    .map(|t| Some(SockaddrStorage::from(t.destination))),
            );
            sendmmsg(
                socket.as_raw_fd(),
                &mut self.headers,
                &slices,
                &self.addrs,
                [],
                MsgFlags::empty(),
            )
            .map(|results| results.count())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;

    fn transmit(to: SocketAddr, from: SocketAddr, n: u16) -> Transmit {
        Transmit {
            proto: str0m::net::Protocol::Udp,
            source: from,
            destination: to,
            contents: n.to_be_bytes().to_vec().into(),
        }
    }

    #[test]
    fn a_batch_reaches_every_destination_in_order() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.set_nonblocking(true).unwrap();
        let from = sender.local_addr().unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batch = BatchSender::default();
        let mut total = Flushed::default();
        for n in 0..150u16 {
            let to = if n % 2 == 0 {
                a.local_addr().unwrap()
            } else {
                b.local_addr().unwrap()
            };
            if batch.push(transmit(to, from, n)) {
                let f = batch.flush(&sender);
                total.sent += f.sent;
                total.dropped += f.dropped;
            }
        }
        let f = batch.flush(&sender);
        total.sent += f.sent;
        assert_eq!(
            total,
            Flushed {
                sent: 150,
                dropped: 0
            }
        );
        assert_eq!(
            batch.flush(&sender),
            Flushed::default(),
            "nothing left queued"
        );
        for (socket, parity) in [(&a, 0u16), (&b, 1)] {
            socket
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let mut buf = [0u8; 8];
            for expected in (0..150u16).filter(|n| n % 2 == parity) {
                let (len, source) = socket.recv_from(&mut buf).expect("datagram arrives");
                assert_eq!((len, source), (2, from));
                assert_eq!(u16::from_be_bytes([buf[0], buf[1]]), expected);
            }
        }
    }
}
