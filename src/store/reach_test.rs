//! Attendance and reach of a state-sized organisation, through the real
//! store on both backends: 12 districts, 286 mandals, 27,736 booths, and a
//! few thousand sessions whose pattern decides, by construction, which
//! booths were reached. The expected counts are worked out from the
//! pattern here, independently of `sabha_signaling::reach::compute`.

use std::collections::HashMap;

use sabha_signaling::reach::{self, Params};
use sabha_signaling::{
    AttendanceStore, Leave, OrgStore, Role, SessionKind, SessionRecord, Traffic, Unit,
};

use super::test_db::{TestDb, on_both_backends};

const DISTRICTS: usize = 12;
const MANDALS: usize = 286;
const BOOTHS: usize = 27_736;
const ROOM: &str = "rallyroom001";
/// The rally starts here (Unix seconds); five minutes reach a booth.
const T0: u64 = 1_800_000_000;
const MIN: u64 = 60;

on_both_backends!(reach_of_a_state_sized_organisation);

/// What one booth's listeners did, by its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pattern {
    /// One member, 10 minutes: reached.
    Stayed,
    /// One member, 3 + 3 minutes on two connections: reached.
    Reconnected,
    /// Two anonymous phones, 3 minutes each: not reached.
    TwoShort,
    /// One member still listening at the report, joined 4 minutes before it: not reached.
    StillOpenShort,
    Silent,
}

fn pattern(booth: usize) -> Pattern {
    match booth % 30 {
        0 => Pattern::Stayed,
        1 => Pattern::Reconnected,
        2 => Pattern::TwoShort,
        3 => Pattern::StillOpenShort,
        _ => Pattern::Silent,
    }
}

fn unit(id: String, kind: &str, parent: Option<String>) -> Unit {
    Unit {
        name: format!("{kind} {id}"),
        id,
        kind: kind.into(),
        parent,
    }
}

/// The organisation, and for each booth index its mandal and district.
fn organisation() -> (Vec<Unit>, Vec<(usize, usize)>) {
    let mut units = vec![unit("S".into(), "state", None)];
    let mut booths = Vec::with_capacity(BOOTHS);
    for d in 0..DISTRICTS {
        units.push(unit(format!("D{d:02}"), "district", Some("S".into())));
    }
    for m in 0..MANDALS {
        // Mandals dealt round the districts, booths round the mandals: the
        // sizes differ by at most one, as in a real state.
        units.push(unit(
            format!("M{m:03}"),
            "mandal",
            Some(format!("D{:02}", m % DISTRICTS)),
        ));
    }
    for b in 0..BOOTHS {
        let m = b % MANDALS;
        units.push(unit(format!("B{b:05}"), "booth", Some(format!("M{m:03}"))));
        booths.push((m, m % DISTRICTS));
    }
    (units, booths)
}

fn session(id: String, booth: usize, member: Option<String>, joined_at: u64) -> SessionRecord {
    SessionRecord {
        session: id,
        room: ROOM.into(),
        name: None,
        member,
        unit: Some(format!("B{booth:05}")),
        role: Role::Listener,
        kind: SessionKind::Listen,
        joined_at,
        left_at: None,
        leave_reason: None,
        traffic: Traffic::default(),
    }
}

fn leave(session: &str, left_at: u64) -> Leave {
    Leave {
        session: session.into(),
        left_at,
        reason: "left".into(),
        traffic: Traffic::default(),
    }
}

/// The sessions of every booth, and how they end.
fn sessions() -> (Vec<SessionRecord>, Vec<Leave>) {
    let (mut joins, mut leaves) = (Vec::new(), Vec::new());
    for b in 0..BOOTHS {
        let member = Some(format!("m{b:05}"));
        match pattern(b) {
            Pattern::Stayed => {
                joins.push(session(format!("s{b}"), b, member, T0));
                leaves.push(leave(&format!("s{b}"), T0 + 10 * MIN));
            }
            Pattern::Reconnected => {
                joins.push(session(format!("s{b}a"), b, member.clone(), T0));
                leaves.push(leave(&format!("s{b}a"), T0 + 3 * MIN));
                joins.push(session(format!("s{b}b"), b, member, T0 + 5 * MIN));
                leaves.push(leave(&format!("s{b}b"), T0 + 8 * MIN));
            }
            Pattern::TwoShort => {
                for phone in ["a", "b"] {
                    joins.push(session(format!("s{b}{phone}"), b, None, T0));
                    leaves.push(leave(&format!("s{b}{phone}"), T0 + 3 * MIN));
                }
            }
            Pattern::StillOpenShort => {
                joins.push(session(format!("s{b}"), b, member, T0 + 56 * MIN));
            }
            Pattern::Silent => {}
        }
    }
    (joins, leaves)
}

async fn reach_of_a_state_sized_organisation(db: &TestDb) {
    let store = db.open().await;
    let (units, placement) = organisation();
    assert_eq!(units.len(), 1 + DISTRICTS + MANDALS + BOOTHS);
    store.apply_org(&units, &[]).await.unwrap();
    let (joins, leaves) = sessions();
    assert!(
        (3_000..10_000).contains(&joins.len()),
        "{} sessions",
        joins.len()
    );
    for join in &joins {
        store.record_join(join.clone()).await.unwrap();
    }
    assert_eq!(
        store.record_leaves(&leaves).await.unwrap(),
        leaves.len() as u64
    );

    // Attendance: every session, closed or still open, with member and unit.
    let recorded = store.attendance(ROOM).await.unwrap();
    assert_eq!(recorded.len(), joins.len());
    let open = recorded.iter().filter(|r| r.left_at.is_none()).count();
    let expected_open = (0..BOOTHS)
        .filter(|&b| pattern(b) == Pattern::StillOpenShort)
        .count();
    assert_eq!(open, expected_open);
    let b0 = recorded.iter().find(|r| r.session == "s0").unwrap();
    assert_eq!(
        (b0.member.as_deref(), b0.unit.as_deref()),
        (Some("m00000"), Some("B00000"))
    );
    assert_eq!(b0.left_at, Some(T0 + 10 * MIN));

    // Reach an hour in, from the units and sessions as stored.
    let params = Params {
        min_seconds: 5 * MIN,
        from: 0,
        to: T0 + 60 * MIN,
    };
    let stored_units = store.units().await.unwrap();
    let (rows, unplaced, totals) = reach::compute(&stored_units, Some("S"), &recorded, params);
    assert_eq!(unplaced, 0);
    assert_eq!(rows.len(), units.len());

    let reached = |b: usize| matches!(pattern(b), Pattern::Stayed | Pattern::Reconnected);
    let mut district = HashMap::<String, (u64, u64)>::new();
    let mut mandal = HashMap::<String, (u64, u64)>::new();
    for (b, &(m, d)) in placement.iter().enumerate() {
        for (map, id) in [
            (&mut district, format!("D{d:02}")),
            (&mut mandal, format!("M{m:03}")),
        ] {
            let entry = map.entry(id).or_default();
            entry.0 += 1;
            entry.1 += u64::from(reached(b));
        }
    }
    let mut checked = 0;
    for row in &rows {
        let expected = match row.kind.as_str() {
            "district" => district[&row.id],
            "mandal" => mandal[&row.id],
            "booth" => {
                let b: usize = row.id[1..].parse().unwrap();
                (1, u64::from(reached(b)))
            }
            _ => continue,
        };
        assert_eq!((row.booths, row.booths_reached), expected, "{}", row.id);
        checked += 1;
    }
    assert_eq!(checked, DISTRICTS + MANDALS + BOOTHS);
    let expected_reached = (0..BOOTHS).filter(|&b| reached(b)).count() as u64;
    assert_eq!(totals.booths, BOOTHS as u64);
    assert_eq!(totals.booths_reached, expected_reached);
    // Listening time: 10 min, 3 + 3, 2 × 3, and the open one's 4 minutes.
    let minutes: u64 = (0..BOOTHS)
        .map(|b| match pattern(b) {
            Pattern::Stayed => 10,
            Pattern::Reconnected | Pattern::TwoShort => 6,
            Pattern::StillOpenShort => 4,
            Pattern::Silent => 0,
        })
        .sum();
    assert_eq!(totals.listener_seconds, minutes * MIN);
    store.close().await;
}
