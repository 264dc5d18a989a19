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

use std::net::{SocketAddr, UdpSocket};

use sabha_media::DATAGRAM_MAX;

/// Datagrams per system call.
pub const BATCH: usize = 64;

/// What one flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub sent: usize,
    pub dropped: usize,
}

/// A batch of datagrams in buffers it owns: the engine writes each one in
/// place ([`BatchSender::buffer`], then [`BatchSender::commit`]), so sending
/// allocates nothing.
pub struct BatchSender {
    buffers: Box<[[u8; DATAGRAM_MAX]; BATCH]>,
    lens: [usize; BATCH],
    destinations: [Option<SocketAddr>; BATCH],
    queued: usize,
    #[cfg(target_os = "linux")]
    linux: linux::Headers,
}

impl Default for BatchSender {
    fn default() -> Self {
        Self {
            buffers: Box::new([[0; DATAGRAM_MAX]; BATCH]),
            lens: [0; BATCH],
            destinations: [None; BATCH],
            queued: 0,
            #[cfg(target_os = "linux")]
            linux: linux::Headers::new(),
        }
    }
}

impl BatchSender {
    /// The buffer the next datagram is written into. Call [`Self::flush`]
    /// whenever [`Self::commit`] says the batch is full, so there always is one.
    pub fn buffer(&mut self) -> &mut [u8] {
        &mut self.buffers[self.queued.min(BATCH - 1)]
    }

    /// Queues the `len` bytes just written into [`Self::buffer`]; returns
    /// true when the batch is full and must be flushed.
    pub fn commit(&mut self, destination: SocketAddr, len: usize) -> bool {
        if self.queued < BATCH {
            self.lens[self.queued] = len.min(DATAGRAM_MAX);
            self.destinations[self.queued] = Some(destination);
            self.queued += 1;
        }
        self.queued >= BATCH
    }

    /// Sends everything queued, without waiting.
    pub fn flush(&mut self, socket: &UdpSocket) -> Flushed {
        let queued = self.queued;
        if queued == 0 {
            return Flushed::default();
        }
        self.queued = 0;
        let datagrams = self.buffers[..queued]
            .iter()
            .zip(&self.lens)
            .zip(&self.destinations)
            .filter_map(|((buf, &len), to)| Some((&buf[..len], (*to)?)));
        #[cfg(target_os = "linux")]
        let sent = self.linux.send_all(socket, datagrams, queued);
        #[cfg(not(target_os = "linux"))]
        let sent = send_each(socket, datagrams);
        Flushed {
            sent,
            dropped: queued - sent,
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn send_each<'a>(
    socket: &UdpSocket,
    datagrams: impl Iterator<Item = (&'a [u8], SocketAddr)>,
) -> usize {
    let mut sent = 0;
    for (bytes, to) in datagrams {
        if socket.send_to(bytes, to).is_err() {
            break;
        }
        sent += 1;
    }
    sent
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::IoSlice;
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};

    use super::{BATCH, UdpSocket};

    /// The kernel headers and addresses of one batch, allocated once.
    pub struct Headers {
        headers: MultiHeaders<SockaddrStorage>,
        addrs: [Option<SockaddrStorage>; BATCH],
    }

    impl Headers {
        pub fn new() -> Self {
            Self {
                headers: MultiHeaders::preallocate(BATCH, None),
                addrs: [None; BATCH],
            }
        }

        /// Sends the batch in as few calls as the kernel allows; returns how
        /// many went out before the socket would have blocked.
        pub fn send_all<'a>(
            &mut self,
            socket: &UdpSocket,
            datagrams: impl Iterator<Item = (&'a [u8], SocketAddr)>,
            count: usize,
        ) -> usize {
            // On the stack: one slice per datagram, no allocation.
            let mut slices: [[IoSlice<'a>; 1]; BATCH] = [[IoSlice::new(&[])]; BATCH];
            let mut n = 0;
            for (bytes, to) in datagrams.take(count.min(BATCH)) {
                slices[n] = [IoSlice::new(bytes)];
                self.addrs[n] = Some(SockaddrStorage::from(to));
                n += 1;
            }
            let mut sent = 0;
            while sent < n {
                let result = sendmmsg(
                    socket.as_raw_fd(),
                    &mut self.headers,
                    &slices[sent..n],
                    &self.addrs[sent..n],
                    [],
                    MsgFlags::empty(),
                );
                // `Err` is EAGAIN (the socket buffer is full) or worse: drop the rest.
                match result.map(|results| results.count()) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => sent += k,
                }
            }
            sent
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;

    fn queue(batch: &mut BatchSender, to: SocketAddr, n: u16) -> bool {
        batch.buffer()[..2].copy_from_slice(&n.to_be_bytes());
        batch.commit(to, 2)
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
            if queue(&mut batch, to, n) {
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
