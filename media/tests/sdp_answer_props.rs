//! Property: for any valid offer the engine accepts, the answer it builds is
//! valid — str0m parses it back, it has ICE credentials and a DTLS
//! fingerprint, exactly one active audio m-line, with Opus, in the direction
//! the endpoint kind sends in. An offer without BUNDLE passes `check_offer`
//! but str0m (BUNDLE-only) refuses it: that must be a `Malformed` error
//! naming `a=group`, never an answer.
//!
//! Offers vary what browsers vary: Opus's payload type and its neighbours
//! (RED, PCMU, telephone-event), direction, extra m-lines (video, an audio
//! line without Opus), BUNDLE or not, header extensions, session- or
//! media-level ICE/DTLS attributes, setup role, and CRLF or LF endings.

use std::time::Instant;

use proptest::prelude::*;
use sabha_media::sdp::{OfferError, check_offer};
use sabha_media::{Engine, EngineConfig, MixRate, OpenError, Profile, RoomConfig, SessionKind};
use str0m::change::SdpAnswer;

#[derive(Debug, Clone)]
struct Offer {
    opus_pt: u8,
    direction: &'static str,
    red: bool,
    pcmu: bool,
    dtmf: bool,
    /// Extra m-lines before and after the Opus one: "video" or "pcmu".
    before: Option<&'static str>,
    after: Option<&'static str>,
    bundle: bool,
    extmaps: Vec<(u8, &'static str)>,
    ice_at_session: bool,
    setup: &'static str,
    crlf: bool,
}

const EXTMAPS: [&str; 4] = [
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "urn:ietf:params:rtp-hdrext:sdes:mid",
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
];

fn offer() -> impl Strategy<Value = Offer> {
    let extra = prop_oneof![Just(None), Just(Some("video")), Just(Some("pcmu"))];
    (
        prop_oneof![Just(111u8), 96u8..=127],
        prop_oneof![Just("sendrecv"), Just("sendonly"), Just("recvonly")],
        (any::<bool>(), any::<bool>(), any::<bool>()),
        (extra.clone(), extra),
        any::<bool>(),
        proptest::sample::subsequence((1u8..=4).collect::<Vec<_>>(), 0..=4),
        any::<bool>(),
        prop_oneof![Just("actpass"), Just("active"), Just("passive")],
        any::<bool>(),
    )
        .prop_map(
            |(
                opus_pt,
                direction,
                (red, pcmu, dtmf),
                (before, after),
                bundle,
                ids,
                ice_at_session,
                setup,
                crlf,
            )| Offer {
                opus_pt,
                direction,
                red,
                pcmu,
                dtmf,
                before,
                after,
                bundle,
                extmaps: ids
                    .into_iter()
                    .map(|id| (id, EXTMAPS[usize::from(id) - 1]))
                    .collect(),
                ice_at_session,
                setup,
                crlf,
            },
        )
}

const FINGERPRINT: &str = "sha-256 \
    6F:5A:0C:3D:9B:1E:44:7A:2C:88:91:D0:3E:5B:7F:12:A4:6C:E9:0D:33:71:5E:B8:C2:19:4F:80:6A:2D:E7:95";

fn render(o: &Offer) -> String {
    let ice = "a=ice-ufrag:Fz3q\na=ice-pwd:c0ffee0c0ffee0c0ffee0c0f\n\
               a=ice-options:trickle\n";
    let dtls = format!("a=fingerprint:{FINGERPRINT}\n");
    let mut mids = Vec::new();
    let mut sections = Vec::new();
    let mut add = |kind: &str, mids: &mut Vec<String>| {
        let mid = mids.len().to_string();
        let mut s = String::new();
        match kind {
            "video" => s.push_str("m=video 9 UDP/TLS/RTP/SAVPF 96\nc=IN IP4 0.0.0.0\n"),
            "pcmu" => s.push_str("m=audio 9 UDP/TLS/RTP/SAVPF 0\nc=IN IP4 0.0.0.0\n"),
            _ => {
                let mut pts = vec![o.opus_pt.to_string()];
                let other = |want: u8| if want == o.opus_pt { 95 } else { want };
                if o.red {
                    pts.push(other(63).to_string());
                }
                if o.pcmu {
                    pts.push("0".into());
                }
                if o.dtmf {
                    pts.push(other(126).to_string());
                }
                s.push_str(&format!(
                    "m=audio 9 UDP/TLS/RTP/SAVPF {}\nc=IN IP4 0.0.0.0\n",
                    pts.join(" ")
                ));
            }
        }
        s.push_str("a=rtcp:9 IN IP4 0.0.0.0\n");
        if !o.ice_at_session {
            s.push_str(ice);
            s.push_str(&dtls);
        }
        s.push_str(&format!("a=setup:{}\na=mid:{mid}\n", o.setup));
        for (id, uri) in &o.extmaps {
            s.push_str(&format!("a=extmap:{id} {uri}\n"));
        }
        match kind {
            "video" => s.push_str("a=sendrecv\na=rtcp-mux\na=rtpmap:96 VP8/90000\n"),
            "pcmu" => s.push_str("a=sendrecv\na=rtcp-mux\na=rtpmap:0 PCMU/8000\n"),
            _ => {
                s.push_str(&format!("a={}\na=msid:- track\na=rtcp-mux\n", o.direction));
                s.push_str(&format!(
                    "a=rtpmap:{pt} opus/48000/2\na=rtcp-fb:{pt} transport-cc\n\
                     a=fmtp:{pt} minptime=10;useinbandfec=1\n",
                    pt = o.opus_pt
                ));
                if o.red {
                    let red = if o.opus_pt == 63 { 95 } else { 63 };
                    s.push_str(&format!(
                        "a=rtpmap:{red} red/48000/2\na=fmtp:{red} {pt}/{pt}\n",
                        pt = o.opus_pt
                    ));
                }
                if o.pcmu {
                    s.push_str("a=rtpmap:0 PCMU/8000\n");
                }
                if o.dtmf {
                    let dtmf = if o.opus_pt == 126 { 95 } else { 126 };
                    s.push_str(&format!("a=rtpmap:{dtmf} telephone-event/8000\n"));
                }
            }
        }
        mids.push(mid);
        sections.push(s);
    };
    if let Some(k) = o.before {
        add(k, &mut mids);
    }
    add("opus", &mut mids);
    if let Some(k) = o.after {
        add(k, &mut mids);
    }
    let mut sdp = String::from("v=0\no=- 4611731400430051336 2 IN IP4 127.0.0.1\ns=-\nt=0 0\n");
    if o.bundle {
        sdp.push_str(&format!("a=group:BUNDLE {}\n", mids.join(" ")));
    }
    sdp.push_str("a=msid-semantic: WMS\n");
    if o.ice_at_session {
        sdp.push_str(ice);
        sdp.push_str(&dtls);
    }
    for s in sections {
        sdp.push_str(&s);
    }
    if o.crlf {
        sdp = sdp.replace('\n', "\r\n");
    }
    sdp
}

/// The kinds an offer in `direction` is for, and the answer directions
/// that fit each: the kind's own (a WHIP answer receives, a WHEP answer
/// sends) or, to a sendrecv offer, sendrecv — str0m mirrors it, and we then
/// simply never use the other half (docs/fuzzing.md, "Findings").
fn kinds(direction: &str) -> &'static [(SessionKind, &'static [&'static str])] {
    match direction {
        "sendonly" => &[(SessionKind::Publish, &["recvonly"])],
        "recvonly" => &[(SessionKind::Listen, &["sendonly"])],
        _ => &[
            (SessionKind::Join, &["sendrecv"]),
            (SessionKind::Publish, &["recvonly", "sendrecv"]),
            (SessionKind::Listen, &["sendonly", "sendrecv"]),
        ],
    }
}

/// The active (port ≠ 0) audio sections of `sdp`.
fn active_audio(sdp: &str) -> Vec<&str> {
    sdp.split("\nm=")
        .skip(1)
        .filter(|s| s.starts_with("audio ") && !s.starts_with("audio 0 "))
        .collect()
}

fn engine() -> (Engine, Instant) {
    // The origin of this test's time; the engine itself never reads a clock.
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let config = EngineConfig {
        advertised: "127.0.0.1:8443".parse().expect("address"),
        room: RoomConfig::default(),
        max_sessions: 100_000,
    };
    (Engine::new(config, now).expect("engine"), now)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn the_answer_to_any_valid_offer_is_valid(o in offer()) {
        let (mut engine, now) = engine();
        let sdp = render(&o);
        for &(kind, answers) in kinds(o.direction) {
            prop_assert!(check_offer(&sdp, kind).is_ok(), "{kind:?} refused\n{sdp}");
            if !o.bundle {
                // str0m is BUNDLE-only: it refuses, and the client is told
                // why (HTTP 400), rather than getting an answer it can't use.
                let refused = engine.open_session(now, "r", MixRate::Full, kind, Profile::Standard, &sdp);
                prop_assert!(
                    matches!(&refused, Err(OpenError::Offer(OfferError::Malformed(m))) if m.contains("a=group")),
                    "{refused:?}"
                );
                continue;
            }
            let opened = engine
                .open_session(now, "r", MixRate::Full, kind, Profile::Standard, &sdp)
                .map_err(|e| TestCaseError::fail(format!("{kind:?}: {e}\n{sdp}")))?;
            let answer = opened.answer;
            prop_assert!(SdpAnswer::from_sdp_string(&answer).is_ok(), "{answer}");
            for attr in ["a=fingerprint:sha-256 ", "a=ice-ufrag:", "a=ice-pwd:"] {
                prop_assert!(answer.contains(attr), "{attr} missing\n{answer}");
            }
            let audio = active_audio(&answer);
            prop_assert_eq!(audio.len(), 1, "one active audio m-line\n{}", answer);
            let rtpmap = format!("a=rtpmap:{} opus/48000/2", o.opus_pt);
            prop_assert!(audio[0].contains(&rtpmap), "Opus at {}\n{}", o.opus_pt, answer);
            let direction = audio[0]
                .lines()
                .map(str::trim)
                .find_map(|l| ["sendrecv", "sendonly", "recvonly", "inactive"].into_iter().find(|d| l == format!("a={d}")));
            prop_assert!(
                direction.is_some_and(|d| answers.contains(&d)),
                "{kind:?} answers {direction:?}, not one of {answers:?}\n{answer}"
            );
        }
    }
}
