//! The signaling hub's room state machine under any sequence of
//! join / leave / mute / hand / promote / lock / end / reopen over three
//! rooms, checked after every step against a plain model:
//! - a join is admitted exactly when the room has not ended and is
//!   unlocked (hosts also into a locked room);
//! - the full roster is the model's participants, in join order, with no
//!   session twice and every session in exactly the room `room_of` names;
//! - the listener count is the number of listen sessions in the room;
//! - an ended room has no participants;
//! - the audience roster is the full one without listen sessions;
//! - a room's event number never goes back.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sabha_signaling::backend::{Role, SessionKind};
use sabha_signaling::hub::View;
use sabha_signaling::{Event, Hub, Participant};

const ROOMS: [&str; 3] = ["a", "b", "c"];

#[derive(Arbitrary, Debug, Clone, Copy)]
enum FuzzRole {
    Host,
    Speaker,
    Listener,
    Participant,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum FuzzKind {
    Publish,
    Listen,
    Join,
}

/// `room` and `who` are taken modulo the rooms and the sessions ever made.
#[derive(Arbitrary, Debug)]
enum Op {
    Join {
        room: u8,
        role: FuzzRole,
        kind: FuzzKind,
    },
    Leave {
        who: u8,
    },
    Mute {
        room: u8,
        who: u8,
        muted: bool,
    },
    Hand {
        room: u8,
        who: u8,
        raised: bool,
    },
    Stage {
        room: u8,
        who: u8,
        on: bool,
    },
    Lock {
        room: u8,
        locked: bool,
    },
    End {
        room: u8,
    },
    Reopen {
        room: u8,
    },
    FlushAudience,
}

#[derive(Default, Clone)]
struct RoomModel {
    /// Session ids and kinds, in join order.
    participants: Vec<(String, SessionKind)>,
    locked: bool,
    ended: bool,
    seq: u64,
}

fn role(r: FuzzRole) -> Role {
    match r {
        FuzzRole::Host => Role::Host,
        FuzzRole::Speaker => Role::Speaker,
        FuzzRole::Listener => Role::Listener,
        FuzzRole::Participant => Role::Participant,
    }
}

fn kind(k: FuzzKind) -> SessionKind {
    match k {
        FuzzKind::Publish => SessionKind::Publish,
        FuzzKind::Listen => SessionKind::Listen,
        FuzzKind::Join => SessionKind::Join,
    }
}

fn room(i: u8) -> usize {
    usize::from(i) % ROOMS.len()
}

fuzz_target!(|ops: Vec<Op>| {
    let hub = Hub::default();
    let mut model = vec![RoomModel::default(); ROOMS.len()];
    // Every session id ever made; ids are server-made and never reused.
    let mut made: Vec<String> = Vec::new();
    let pick = |made: &[String], who: u8| made.get(usize::from(who) % made.len().max(1)).cloned();
    for op in ops {
        match op {
            Op::Join {
                room: r,
                role: ro,
                kind: k,
            } => {
                let (r, ro, k) = (room(r), role(ro), kind(k));
                let id = format!("s{}", made.len());
                made.push(id.clone());
                let participant = Participant {
                    id: id.clone(),
                    name: None,
                    role: ro,
                    kind: k,
                    muted: false,
                    speaking: false,
                    hand_raised: false,
                    on_stage: k != SessionKind::Listen,
                };
                let m = &mut model[r];
                let admit = !m.ended && (!m.locked || ro == Role::Host);
                assert_eq!(hub.admit(ROOMS[r], ro).is_ok(), admit);
                assert_eq!(hub.join(ROOMS[r], participant).is_ok(), admit, "join {id}");
                if admit {
                    m.participants.push((id, k));
                }
            }
            Op::Leave { who } => {
                let Some(id) = pick(&made, who) else { continue };
                let was = model.iter_mut().find_map(|m| {
                    let i = m.participants.iter().position(|(p, _)| *p == id)?;
                    Some(m.participants.remove(i))
                });
                let left = hub.leave(&id, "left");
                assert_eq!(left.map(|p| p.id), was.map(|(p, _)| p));
            }
            Op::Mute {
                room: r,
                who,
                muted,
            } => {
                let Some(id) = pick(&made, who) else { continue };
                let after = hub.update(ROOMS[room(r)], &id, |p| {
                    (p.muted != muted).then(|| {
                        p.muted = muted;
                        let participant = p.id.clone();
                        if muted {
                            Event::Muted { participant }
                        } else {
                            Event::Unmuted { participant }
                        }
                    })
                });
                check_update(&model[room(r)], &id, after.as_ref());
                if let Some(p) = after {
                    assert_eq!(p.muted, muted);
                }
            }
            Op::Hand {
                room: r,
                who,
                raised,
            } => {
                let Some(id) = pick(&made, who) else { continue };
                let after = hub.update(ROOMS[room(r)], &id, |p| {
                    (p.hand_raised != raised).then(|| {
                        p.hand_raised = raised;
                        let participant = p.id.clone();
                        if raised {
                            Event::HandRaised { participant }
                        } else {
                            Event::HandLowered { participant }
                        }
                    })
                });
                check_update(&model[room(r)], &id, after.as_ref());
            }
            Op::Stage { room: r, who, on } => {
                let Some(id) = pick(&made, who) else { continue };
                let after = hub.update(ROOMS[room(r)], &id, |p| {
                    (p.on_stage != on).then(|| {
                        p.on_stage = on;
                        let participant = p.id.clone();
                        if on {
                            Event::Promoted {
                                participant,
                                token: None,
                                join: None,
                            }
                        } else {
                            Event::Demoted { participant }
                        }
                    })
                });
                check_update(&model[room(r)], &id, after.as_ref());
            }
            Op::Lock { room: r, locked } => {
                hub.set_locked(ROOMS[room(r)], locked);
                model[room(r)].locked = locked;
            }
            Op::End { room: r } => {
                let m = &mut model[room(r)];
                assert_eq!(hub.end(ROOMS[room(r)]), !m.ended);
                m.ended = true;
                m.participants.clear();
            }
            Op::Reopen { room: r } => {
                let m = &mut model[room(r)];
                assert_eq!(hub.reopen(ROOMS[room(r)]), m.ended);
                m.ended = false;
            }
            Op::FlushAudience => hub.flush_audience(),
        }
        check(&hub, &mut model, &made);
    }
});

/// An update finds the participant exactly when the model has it there.
fn check_update(model: &RoomModel, id: &str, after: Option<&Participant>) {
    let present = model.participants.iter().any(|(p, _)| p == id);
    assert_eq!(after.is_some(), present, "update of {id}");
    if let Some(p) = after {
        assert_eq!(p.id, id);
    }
}

fn check(hub: &Hub, model: &mut [RoomModel], made: &[String]) {
    for (name, m) in ROOMS.iter().zip(model.iter_mut()) {
        let full = hub.roster(name, View::Full, None);
        let Event::Roster {
            participants,
            listeners,
            locked,
            ended,
        } = full.event
        else {
            panic!("roster is a roster");
        };
        assert!(full.seq >= m.seq, "seq went back in {name}");
        m.seq = full.seq;
        let ids: Vec<(String, SessionKind)> = participants
            .iter()
            .map(|p| (p.id.clone(), p.kind))
            .collect();
        assert_eq!(ids, m.participants, "roster of {name}");
        assert_eq!(
            listeners,
            m.participants
                .iter()
                .filter(|(_, k)| *k == SessionKind::Listen)
                .count()
        );
        assert_eq!((locked, ended), (m.locked, m.ended));
        assert!(!ended || participants.is_empty());
        let Event::Roster {
            participants: audience,
            ..
        } = hub.roster(name, View::Audience, None).event
        else {
            panic!("roster is a roster");
        };
        let expected: Vec<&Participant> = participants
            .iter()
            .filter(|p| p.kind != SessionKind::Listen)
            .collect();
        assert_eq!(audience.iter().collect::<Vec<_>>(), expected);
    }
    for id in made {
        let home = model
            .iter()
            .zip(ROOMS)
            .filter(|(m, _)| m.participants.iter().any(|(p, _)| p == id))
            .map(|(_, name)| name.to_owned())
            .collect::<Vec<_>>();
        assert!(home.len() <= 1, "{id} in two rooms");
        assert_eq!(hub.room_of(id), home.first().cloned(), "room_of {id}");
    }
}
