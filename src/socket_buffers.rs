//! The media socket's kernel buffers.
//!
//! One socket carries every peer, so a moment in which the media thread is
//! busy (a storm of joins, a late tick) must be absorbed by the socket's
//! receive buffer. With Linux's default (208 KiB) a storm of 10,000
//! listeners overflowed it: 20,000 datagrams dropped in the kernel in under
//! a minute, and each lost STUN check or DTLS flight of a joining peer cost
//! it a retransmission or its join (docs/benchmarks.md). So the buffers are
//! asked to be [`WANT_BYTES`] each way, past `net.core.rmem_max` /
//! `wmem_max` when the process may (`CAP_NET_ADMIN`), else up to them.

use std::io;
use std::net::UdpSocket;

/// Asked for each way: at 10,000 listeners, about half a second of their
/// RTCP and consent checks plus a storm's handshakes (several thousand
/// datagrams of a few hundred bytes each, with the kernel's overhead).
pub const WANT_BYTES: usize = 8 << 20;

/// What the kernel granted, in the bytes we asked in (Linux reports twice
/// that, its bookkeeping included; these are halved back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    pub receive: usize,
    pub send: usize,
}

/// Enlarges `socket`'s receive and send buffers towards [`WANT_BYTES`].
#[cfg(target_os = "linux")]
pub fn enlarge(socket: &UdpSocket) -> io::Result<Granted> {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &WANT_BYTES).is_err() {
        setsockopt(socket, sockopt::RcvBuf, &WANT_BYTES)?;
    }
    if setsockopt(socket, sockopt::SndBufForce, &WANT_BYTES).is_err() {
        setsockopt(socket, sockopt::SndBuf, &WANT_BYTES)?;
    }
    Ok(Granted {
        receive: getsockopt(socket, sockopt::RcvBuf)? / 2,
        send: getsockopt(socket, sockopt::SndBuf)? / 2,
    })
}

/// Elsewhere the system's defaults stay (and the driver says so).
#[cfg(not(target_os = "linux"))]
pub fn enlarge(_socket: &UdpSocket) -> io::Result<Granted> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

impl Granted {
    /// Either way got less than [`WANT_BYTES`]: the system's limit.
    pub fn is_capped(&self) -> bool {
        self.receive < WANT_BYTES || self.send < WANT_BYTES
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn sysctl(name: &str) -> usize {
        std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn the_buffers_grow_to_what_is_asked_or_the_systems_limit() {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let granted = enlarge(&socket).expect("enlarge");
        // Without the privilege to force it, the kernel caps at *mem_max.
        let floor = |limit: usize| WANT_BYTES.min(limit);
        assert!(granted.receive >= floor(sysctl("rmem_max")), "{granted:?}");
        assert!(granted.send >= floor(sysctl("wmem_max")), "{granted:?}");
    }
}
