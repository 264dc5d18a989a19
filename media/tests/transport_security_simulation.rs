//! The transport's own defences, each shown to hold against an attack and
//! shown to matter by the honest case beside it: the DTLS certificate must
//! match the SDP's fingerprint, a STUN binding request must carry the
//! session's MESSAGE-INTEGRITY, and SRTP refuses replayed and forged packets.
//! (SECURITY.md, "What is protected".)

mod sim;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use sabha_media::analysis::dominant_frequency;
use sabha_media::opus::SAMPLE_RATE;
use sabha_media::{CloseReason, MixRate, OpenError, Output, Profile, SessionKind};
use sim::{SERVER, Sim, is_rtp};

const ATTACKER: &str = "127.0.0.66:5555";

/// The value of the first `a=<name>:` line of an SDP.
fn attribute<'a>(sdp: &'a str, name: &str) -> &'a str {
    let prefix = format!("a={name}:");
    sdp.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("the SDP has a={name}"))
        .trim()
}

/// The offer with the last hex digit of its certificate fingerprint changed:
/// what a man in the middle who substitutes his own certificate must do.
fn with_forged_fingerprint(offer: String) -> String {
    let fingerprint = attribute(&offer, "fingerprint").to_owned();
    let last = fingerprint.chars().last().expect("non-empty");
    let other = if last == '0' { '1' } else { '0' };
    let forged = format!("{}{other}", &fingerprint[..fingerprint.len() - 1]);
    assert_ne!(forged, fingerprint);
    offer.replace(&fingerprint, &forged)
}

#[test]
fn a_certificate_that_does_not_match_the_offered_fingerprint_gets_no_audio() {
    let mut sim = Sim::new(71);
    sim.join_with_tone("rally", SessionKind::Publish, 440.0);
    let honest = sim.join("rally", SessionKind::Listen);
    let forged = sim.join_with_edited_offer("rally", SessionKind::Listen, with_forged_fingerprint);
    sim.run_for(Duration::from_secs(5));

    // The honest listener, identical but for the fingerprint, hears the rally.
    let c = &sim.clients[honest];
    assert!(c.frames_received >= 200, "{} frames", c.frames_received);
    assert!((dominant_frequency(c.tail(1.0), SAMPLE_RATE) - 440.0).abs() < 5.0);
    // The one whose certificate does not match gets nothing, and its
    // session is closed as failed as soon as the handshake showed it.
    assert_eq!(sim.clients[forged].frames_received, 0);
    let id = sim.session_ids[forged];
    let closed = sim.closed.iter().find(|(s, ..)| *s == id);
    assert!(
        matches!(closed, Some((_, CloseReason::Failed, _))),
        "{closed:?}"
    );
    assert_eq!(
        sim.engine.session_count(),
        2,
        "publisher and honest listener"
    );
}

/// Without a fingerprint there is nothing to check the certificate against:
/// the offer is refused before any session exists (HTTP 400).
#[test]
fn an_offer_without_a_fingerprint_is_refused() {
    let mut sim = Sim::new(72);
    let honest = sim.join("rally", SessionKind::Listen);
    let bare: String = sim.offers[honest]
        .lines()
        .filter(|l| !l.starts_with("a=fingerprint:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    assert_ne!(bare, sim.offers[honest]);
    let refused = sim.engine.open_session(
        sim.now,
        "rally",
        MixRate::Full,
        SessionKind::Listen,
        Profile::Standard,
        &bare,
    );
    assert!(
        matches!(refused, Err(OpenError::Offer(_))),
        "{:?}",
        refused.map(|o| o.id)
    );
    assert_eq!(sim.engine.session_count(), 1);
}

thread_local! {
    /// Datagrams the engine sent to [`ATTACKER`].
    static TO_ATTACKER: RefCell<usize> = const { RefCell::new(0) };
    /// RTP datagrams the engine received, while recording.
    static RECORDED: RefCell<Option<Vec<Vec<u8>>>> = const { RefCell::new(None) };
}

fn count_to_attacker(out: &Output, _: &[u8]) {
    if let Output::Transmit(t) = out
        && t.destination == ATTACKER.parse::<SocketAddr>().expect("address")
    {
        TO_ATTACKER.with(|n| *n.borrow_mut() += 1);
    }
}

fn sent_to_attacker() -> usize {
    TO_ATTACKER.with(|n| *n.borrow())
}

/// A STUN Binding request from the client's side of `client`'s session
/// (`server-ufrag:client-ufrag`), nominating the sender, signed with
/// `password`.
fn binding_request(sim: &Sim, client: usize, password: &str) -> Vec<u8> {
    use str0m::ice::{StunMessage, TransId};
    let username = format!(
        "{}:{}",
        attribute(&sim.answers[client], "ice-ufrag"),
        attribute(&sim.offers[client], "ice-ufrag")
    );
    let hmac = str0m::crypto::from_feature_flags().sha1_hmac_provider;
    let msg = StunMessage::binding_request(&username, TransId::new(), true, 1, 100, true);
    let mut buf = vec![0u8; 512];
    let n = msg
        .to_bytes(Some(password.as_bytes()), &mut buf, |k, p| {
            hmac.sha1_hmac(k, p)
        })
        .expect("serialises");
    buf.truncate(n);
    assert!(StunMessage::parse(&buf).is_ok(), "well-formed STUN");
    buf
}

/// A stranger who saw both ICE ufrags (they travel in the clear in STUN)
/// but not the password cannot bind an address to the session; with the
/// password, the same request would be answered and the address taken.
#[test]
fn a_binding_request_without_the_sessions_message_integrity_is_ignored() {
    let mut sim = Sim::new(13);
    sim.engine_polled = count_to_attacker;
    sim.join_with_tone("rally", SessionKind::Publish, 440.0);
    let listener = sim.join("rally", SessionKind::Listen);
    sim.run_for(Duration::from_secs(1));
    let attacker: SocketAddr = ATTACKER.parse().expect("address");

    let forged = binding_request(&sim, listener, "not-the-password");
    let before = sim.engine.stats().drops;
    sim.engine
        .handle_receive(sim.now, attacker, SERVER, &forged);
    // Anything else from that address still counts as a stranger's.
    sim.engine.handle_receive(
        sim.now,
        attacker,
        SERVER,
        &[0x80, 0x6f, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],
    );
    let heard = sim.clients[listener].frames_received;
    sim.run_for(Duration::from_secs(1));
    let after = sim.engine.stats().drops;
    assert_eq!(after.unknown_source, before.unknown_source + 2, "{after:?}");
    assert_eq!(sent_to_attacker(), 0, "nothing went to the forger");
    assert!(
        sim.clients[listener].frames_received >= heard + 45,
        "the listener still hears"
    );

    // The honest case: signed with the session's ICE password, the same
    // request from the same address is answered.
    let password = attribute(&sim.answers[listener], "ice-pwd").to_owned();
    let signed = binding_request(&sim, listener, &password);
    sim.engine
        .handle_receive(sim.now, attacker, SERVER, &signed);
    sim.run_for(Duration::from_millis(100));
    assert!(sent_to_attacker() >= 1, "a signed request is answered");
}

fn record_rtp(bytes: &[u8]) {
    if is_rtp(bytes) {
        RECORDED.with(|r| {
            if let Some(r) = r.borrow_mut().as_mut() {
                r.push(bytes.to_vec());
            }
        });
    }
}

/// Every talker packet a stranger (or the network) plays back a second
/// time is dropped before it reaches the mixer, and so is one whose
/// sequence number was changed to look new: its authentication tag no
/// longer verifies.
#[test]
fn replayed_and_forged_srtp_never_reach_the_mixer() {
    let mut sim = Sim::new(73);
    sim.engine_received = record_rtp;
    let talker = sim.join_with_tone("rally", SessionKind::Publish, 440.0);
    let listener = sim.join("rally", SessionKind::Listen);
    sim.run_for(Duration::from_secs(1));

    RECORDED.with(|r| *r.borrow_mut() = Some(Vec::new()));
    let live_before = sim.engine.stats().audio_packets_in;
    sim.run_for(Duration::from_secs(2));
    let recorded = RECORDED.with(|r| r.borrow_mut().take()).expect("recording");
    let live = sim.engine.stats().audio_packets_in - live_before;
    // The honest case: the talker's packets of those 2 s all got through.
    assert!(recorded.len() >= 95, "{} recorded", recorded.len());
    assert_eq!(live, recorded.len() as u64, "every live packet accepted");

    sim.clients[talker].stop_tone();
    sim.run_for(Duration::from_millis(500));
    let stats = sim.engine.stats();
    let from = sim.clients[talker].addr;
    for packet in &recorded {
        sim.engine.handle_receive(sim.now, from, SERVER, packet);
    }
    // Forged: each recorded packet with a sequence number 1,000 ahead (new,
    // so not a replay), its encrypted payload and tag unchanged.
    for packet in &recorded {
        let mut forged = packet.clone();
        let seq = u16::from_be_bytes([forged[2], forged[3]]).wrapping_add(1000);
        forged[2..4].copy_from_slice(&seq.to_be_bytes());
        sim.engine.handle_receive(sim.now, from, SERVER, &forged);
    }
    sim.run_for(Duration::from_millis(500));
    let after = sim.engine.stats();
    assert_eq!(
        after.audio_packets_in, stats.audio_packets_in,
        "no replayed or forged packet reached the mixer"
    );
    // They were the session's to judge (its address, its SRTP context),
    // not strangers' datagrams dropped by routing.
    assert_eq!(after.drops.unknown_source, stats.drops.unknown_source);
    // The session survived the attack: the talker is heard again.
    sim.clients[talker].send_tone(660.0);
    sim.run_for(Duration::from_secs(2));
    let c = &sim.clients[listener];
    assert!((dominant_frequency(c.tail(1.0), SAMPLE_RATE) - 660.0).abs() < 5.0);
}
