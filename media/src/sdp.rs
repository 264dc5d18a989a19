//! Checks an SDP offer before any WebRTC state is created for it.
//!
//! str0m parses the offer and builds the answer; this module adds what the
//! HTTP layer must tell a client clearly: the offer is malformed, it has no
//! Opus audio, or its direction does not fit the endpoint (a WHEP offer that
//! wants to send, a `/join` offer that is not sendrecv).

use str0m::change::SdpOffer;

use crate::SessionKind;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("malformed SDP offer: {0}")]
    Malformed(String),
    #[error("the offer has no audio m-line with Opus/48000/2")]
    NoOpus,
    #[error("the offer's audio is {found}; {endpoint} needs {needed}")]
    WrongDirection {
        found: &'static str,
        endpoint: &'static str,
        needed: &'static str,
    },
}

/// Direction of the client's audio m-line, as offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// Parses `sdp`, and checks it offers Opus audio in a direction that fits `kind`.
pub fn check_offer(sdp: &str, kind: SessionKind) -> Result<SdpOffer, OfferError> {
    let offer = SdpOffer::from_sdp_string(sdp)
        .map_err(|e| OfferError::Malformed(parse_error_detail(&e.to_string())))?;
    let direction = opus_audio_direction(sdp).ok_or(OfferError::NoOpus)?;
    let (endpoint, needed, ok) = match kind {
        SessionKind::Publish => (
            "WHIP",
            "sendonly or sendrecv",
            matches!(direction, Direction::SendOnly | Direction::SendRecv),
        ),
        SessionKind::Listen => (
            "WHEP",
            "recvonly or sendrecv",
            matches!(direction, Direction::RecvOnly | Direction::SendRecv),
        ),
        SessionKind::Join => ("join", "sendrecv", direction == Direction::SendRecv),
    };
    if !ok {
        return Err(OfferError::WrongDirection {
            found: direction.name(),
            endpoint,
            needed,
        });
    }
    Ok(offer)
}

/// The direction of the first active audio m-line that carries Opus/48000.
fn opus_audio_direction(sdp: &str) -> Option<Direction> {
    let mut sections = sdp.split("\nm=").skip(1);
    sections.find_map(|section| {
        let mut lines = section.lines();
        let mline = lines.next()?.trim();
        let mut fields = mline.split_whitespace();
        if fields.next() != Some("audio") || fields.next() == Some("0") {
            return None;
        }
        let mut direction = Direction::SendRecv;
        let mut opus = false;
        for line in lines.map(str::trim) {
            match line {
                "a=sendrecv" => direction = Direction::SendRecv,
                "a=sendonly" => direction = Direction::SendOnly,
                "a=recvonly" => direction = Direction::RecvOnly,
                "a=inactive" => direction = Direction::Inactive,
                _ => opus |= is_opus_rtpmap(line),
            }
        }
        opus.then_some(direction)
    })
}

/// The parser's message without its internal positions (memory addresses).
fn parse_error_detail(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("PointerOffset"))
        .collect();
    if lines.is_empty() {
        "not an SDP session description".to_owned()
    } else {
        lines.join("; ")
    }
}

fn is_opus_rtpmap(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("a=rtpmap:") else {
        return false;
    };
    let Some((_, codec)) = rest.split_once(' ') else {
        return false;
    };
    codec.to_ascii_lowercase().starts_with("opus/48000")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal browser-like offer.
    fn offer(direction: &str, rtpmap: &str) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
             a=fingerprint:sha-256 {fp}\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=setup:actpass\r\n\
             a=rtcp-mux\r\n{rtpmap}\r\na={direction}\r\n",
            fp = ["AB"; 32].join(":")
        )
    }

    const OPUS: &str = "a=rtpmap:111 opus/48000/2";

    #[test]
    fn accepts_fitting_directions() {
        assert!(check_offer(&offer("sendonly", OPUS), SessionKind::Publish).is_ok());
        assert!(check_offer(&offer("sendrecv", OPUS), SessionKind::Publish).is_ok());
        assert!(check_offer(&offer("recvonly", OPUS), SessionKind::Listen).is_ok());
        assert!(check_offer(&offer("sendrecv", OPUS), SessionKind::Join).is_ok());
    }

    #[test]
    fn refuses_wrong_directions_with_a_reason() {
        let e = check_offer(&offer("recvonly", OPUS), SessionKind::Publish).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the offer's audio is recvonly; WHIP needs sendonly or sendrecv"
        );
        assert!(check_offer(&offer("sendonly", OPUS), SessionKind::Listen).is_err());
        assert!(check_offer(&offer("recvonly", OPUS), SessionKind::Join).is_err());
    }

    #[test]
    fn refuses_an_offer_without_opus() {
        let pcmu = offer("sendonly", "a=rtpmap:0 PCMU/8000").replace("SAVPF 111", "SAVPF 0");
        assert_eq!(
            check_offer(&pcmu, SessionKind::Publish).unwrap_err(),
            OfferError::NoOpus
        );
        let rejected = offer("sendonly", OPUS).replace("m=audio 9", "m=audio 0");
        assert_eq!(
            check_offer(&rejected, SessionKind::Publish).unwrap_err(),
            OfferError::NoOpus
        );
    }

    #[test]
    fn malformed_detail_names_the_problem_without_internals() {
        let Err(OfferError::Malformed(detail)) = check_offer("garbage", SessionKind::Listen) else {
            panic!("garbage is malformed")
        };
        assert!(!detail.contains("0x"), "{detail}");
        assert!(detail.contains("Expected `v`"), "{detail}");
    }

    #[test]
    fn refuses_garbage() {
        for garbage in [
            "",
            "hello",
            "v=0\r\nm=audio",
            "\u{0}\u{1}\u{2}",
            &"x".repeat(10_000),
        ] {
            assert!(matches!(
                check_offer(garbage, SessionKind::Listen),
                Err(OfferError::Malformed(_) | OfferError::NoOpus)
            ));
        }
    }
}
