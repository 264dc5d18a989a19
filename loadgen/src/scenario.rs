//! The scenarios: who joins where, in which steps, and how a step is
//! measured into a [`Row`].
//!
//! A step is: queue its joins at the ramp rate, wait until every accepted
//! peer is connected and (for receivers) has its first packet, or 10 s, let
//! it settle a second, then measure over `--hold` seconds: server and own
//! CPU from /proc, server RSS, per-peer packet counters and sampled PCM
//! before and after, and the mixer's late ticks from /metrics.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::api::{Api, ApiError, metric};
use crate::audio::{Clip, PUBLISHER_HZ, TALKER_HZ, Verdict};
use crate::cli::{Cli, Profile, Scenario};
use crate::joiner::{Job, Joiner, Outcome};
use crate::peer::{GAP, Send, State};
use crate::report::{self, Row, percentile};
use crate::shard::{PeerSnap, Shard, ShardError};
use crate::target::{Target, cpu_seconds};

/// How long a step waits for its peers to connect and hear something.
const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// Quiet time after a step connected, before its window.
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("setting up: {0}")]
    Api(#[from] ApiError),
    #[error("{0}")]
    Shard(#[from] ShardError),
    #[error("encoding the tones: {0}")]
    Codec(String),
}

/// What a peer should do and hear.
struct Expect {
    step: usize,
    /// Its received packets count towards delivery.
    receiver: bool,
    role: &'static str,
    want_hz: Vec<u32>,
    own_hz: Option<u32>,
    rate: f64,
}

/// The result of a run.
pub struct RunResult {
    pub rows: Vec<Row>,
    pub failures: Vec<String>,
    pub deleted: (usize, usize),
}

pub struct Runner<'a> {
    cli: &'a Cli,
    api: Api,
    target: &'a Target,
    shards: Vec<Shard>,
    joiner: Option<Joiner>,
    deadline: Instant,
    next_id: usize,
    expect: HashMap<usize, Expect>,
    outcomes: HashMap<usize, Outcome>,
    rows: Vec<Row>,
    failures: Vec<String>,
    rss_base: u64,
    tty: bool,
}

impl<'a> Runner<'a> {
    pub fn new(cli: &'a Cli, target: &'a Target) -> Result<Runner<'a>, RunError> {
        let c = &cli.common;
        let api = Api::new(&target.base, &target.key, c.http_threads);
        let shards = (0..c.threads)
            .map(Shard::start)
            .collect::<Result<Vec<_>, _>>()?;
        let adders = shards.iter().map(Shard::adder).collect();
        let joiner = Joiner::start(&api, adders, c.http_threads);
        Ok(Runner {
            cli,
            api,
            target,
            shards,
            joiner: Some(joiner),
            deadline: Instant::now() + Duration::from_secs_f64(c.duration),
            next_id: 0,
            expect: HashMap::new(),
            outcomes: HashMap::new(),
            rows: Vec::new(),
            failures: Vec::new(),
            rss_base: target.rss_bytes().unwrap_or(0),
            tty: std::io::stderr().is_terminal(),
        })
    }

    /// Runs the scenario, printing each row as it is measured.
    pub fn run(mut self) -> Result<RunResult, RunError> {
        println!("{}", report::header());
        let result = match &self.cli.scenario {
            Scenario::Fanout {
                listeners,
                step,
                profile,
            } => self.fanout(
                *listeners,
                step.unwrap_or(*listeners),
                *profile,
                "fanout",
                None,
            ),
            Scenario::Storm {
                listeners,
                within,
                profile,
            } => {
                let rate = *listeners as f64 / within;
                self.fanout(*listeners, *listeners, *profile, "storm", Some(rate))
            }
            Scenario::Bridges {
                rooms,
                participants,
                talkers,
            } => self.bridges(*rooms, *participants, *talkers),
        };
        // DELETE first: a DTLS close alert would end the sessions itself.
        let deleted = self.joiner.take().map_or((0, 0), |j| j.finish(&self.api));
        for s in self.shards.drain(..) {
            s.stop();
        }
        result?;
        Ok(RunResult {
            rows: self.rows,
            failures: self.failures,
            deleted,
        })
    }

    fn fanout(
        &mut self,
        listeners: usize,
        step: usize,
        profile: Profile,
        name: &str,
        rate: Option<f64>,
    ) -> Result<(), RunError> {
        let room = self.api.create_room("rally", &format!("loadgen {name}"))?;
        let speak: Arc<str> = self.api.mint(&room, "speaker")?.into();
        let listen: Arc<str> = self.api.mint(&room, "listener")?.into();
        let clip = Arc::new(Clip::tone(PUBLISHER_HZ).map_err(|e| RunError::Codec(e.to_string()))?);
        let publisher = self.job(
            format!("/v1/rooms/{room}/whip"),
            &speak,
            Send::Tone(clip),
            false,
            Expect {
                step: 0,
                receiver: false,
                role: "publisher",
                want_hz: vec![],
                own_hz: None,
                rate: 0.0,
            },
        );
        self.join(vec![publisher], self.cli.common.ramp, 0);
        self.wait_connected(0);

        let query = if profile == Profile::Low {
            "?profile=low"
        } else {
            ""
        };
        let every = self.cli.common.decode_every;
        let mut added = 0;
        let mut step_no = 1;
        while added < listeners {
            if Instant::now() > self.deadline {
                self.failures
                    .push("--duration reached before the last step".into());
                return Ok(());
            }
            let n = step.min(listeners - added);
            let jobs = (0..n)
                .map(|i| {
                    let k = added + i;
                    self.job(
                        format!("/v1/rooms/{room}/whep{query}"),
                        &listen,
                        Send::Nothing,
                        k % every == 0,
                        Expect {
                            step: step_no,
                            receiver: true,
                            role: "listener",
                            want_hz: vec![PUBLISHER_HZ],
                            own_hz: None,
                            rate: profile.packet_rate(),
                        },
                    )
                })
                .collect();
            self.join(jobs, rate.unwrap_or(self.cli.common.ramp), step_no);
            self.wait_connected(step_no);
            self.measure(name, step_no)?;
            added += n;
            step_no += 1;
        }
        Ok(())
    }

    fn bridges(&mut self, rooms: usize, members: usize, talkers: usize) -> Result<(), RunError> {
        let clips = TALKER_HZ[..talkers]
            .iter()
            .map(|&hz| Clip::tone(hz).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RunError::Codec(e.to_string()))?;
        let silence = Arc::new(Clip::silence().map_err(|e| RunError::Codec(e.to_string()))?);
        let mut jobs = Vec::new();
        for r in 0..rooms {
            let room = self
                .api
                .create_room("bridge", &format!("loadgen bridge {r}"))?;
            let token: Arc<str> = self.api.mint(&room, "participant")?.into();
            let has_silent = talkers < members;
            // At least one sampled member per room; both kinds in the first two.
            let sampled = |j: usize| {
                let (talker, silent) = (j == 0 && talkers > 1, has_silent && j == talkers);
                if r < 2 {
                    talker || silent
                } else if (r % 2 == 0 && talkers > 1) || !has_silent {
                    j == 0
                } else {
                    silent
                }
            };
            for j in 0..members {
                let all: Vec<u32> = TALKER_HZ[..talkers].to_vec();
                let (send, role, want, own) = if j < talkers {
                    let others = all.iter().copied().filter(|&h| h != all[j]).collect();
                    (Send::Tone(clips[j].clone()), "talker", others, Some(all[j]))
                } else {
                    (Send::Silence(silence.clone()), "silent", all, None)
                };
                // A lone talker hears an empty mix: nothing to count.
                let receiver = !(j < talkers && talkers == 1);
                jobs.push(self.job(
                    format!("/v1/rooms/{room}/join"),
                    &token,
                    send,
                    sampled(j) && receiver,
                    Expect {
                        step: 1,
                        receiver,
                        role,
                        want_hz: want,
                        own_hz: own,
                        rate: 50.0,
                    },
                ));
            }
        }
        self.join(jobs, self.cli.common.ramp, 1);
        self.wait_connected(1);
        self.measure("bridges", 1)
    }

    fn job(&mut self, path: String, token: &Arc<str>, send: Send, sampled: bool, e: Expect) -> Job {
        let id = self.next_id;
        self.next_id += 1;
        self.expect.insert(id, e);
        Job {
            id,
            path,
            token: token.clone(),
            send,
            sampled,
            reports: !self.cli.common.no_reports,
            shard: id % self.shards.len(),
        }
    }

    /// Queues the jobs at `rate` and collects their HTTP outcomes.
    fn join(&mut self, jobs: Vec<Job>, rate: f64, step: usize) {
        let total = jobs.len();
        let Some(joiner) = self.joiner.as_ref() else {
            return;
        };
        let tty = self.tty;
        let queued = joiner.join_paced(jobs, rate, self.deadline, |n| {
            if tty && (n % 50 == 0 || n == total) {
                eprint!("\rstep {step}: joining {n}/{total}   ");
            }
        });
        let queued = queued.min(total);
        if queued < total {
            self.failures.push(format!(
                "step {step}: --duration reached after {queued} of {total} joins"
            ));
        }
        let mut got = 0;
        let wait_until = Instant::now() + Duration::from_secs(30);
        while got < queued {
            let left = wait_until.saturating_duration_since(Instant::now());
            match joiner.outcomes.recv_timeout(left) {
                Ok(o) => {
                    got += 1;
                    self.outcomes.insert(o.id, o);
                }
                Err(_) => {
                    self.failures.push(format!(
                        "step {step}: {} joins did not answer within 30 s",
                        queued - got
                    ));
                    break;
                }
            }
        }
        if tty {
            eprint!("\r{:60}\r", "");
        }
    }

    fn snapshots(&self, record: bool, take_pcm: bool) -> Result<Vec<PeerSnap>, ShardError> {
        let mut all = Vec::new();
        for s in &self.shards {
            all.extend(s.snapshot(record, take_pcm)?);
        }
        Ok(all)
    }

    /// Waits until every accepted peer of `step` is connected and every
    /// receiver has a packet, or [`CONNECT_WAIT`]; then [`SETTLE`].
    fn wait_connected(&self, step: usize) {
        let until = Instant::now() + CONNECT_WAIT;
        while Instant::now() < until.min(self.deadline) {
            let Ok(snaps) = self.snapshots(false, false) else {
                break;
            };
            let pending = snaps.iter().filter(|s| {
                let e = &self.expect[&s.id];
                e.step == step
                    && (s.state == State::Connecting
                        || (s.state == State::Connected && e.receiver && s.rx.first_at.is_none()))
            });
            if pending.count() == 0 {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        thread::sleep(SETTLE);
    }

    fn measure(&mut self, scenario: &str, step: usize) -> Result<(), RunError> {
        let c = &self.cli.common;
        let m0 = self.api.metrics().ok();
        let before = self.snapshots(true, false)?;
        let rss0 = self.target.rss_bytes();
        let (srv0, own0, t0) = (
            self.target.cpu_seconds(),
            cpu_seconds("/proc/self/stat"),
            Instant::now(),
        );
        let hold = Duration::from_secs_f64(c.hold);
        let hold = hold.min(self.deadline.saturating_duration_since(t0));
        // The lowest RSS of the window, sampled each second: what the end
        // is above it grew after the join's memory had gone back.
        let mut rss_low = rss0;
        let end = t0 + hold;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            thread::sleep(left.min(Duration::from_secs(1)));
            rss_low = match (rss_low, self.target.rss_bytes()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let (srv1, own1, t1) = (
            self.target.cpu_seconds(),
            cpu_seconds("/proc/self/stat"),
            Instant::now(),
        );
        let after = self.snapshots(false, true)?;
        let m1 = self.api.metrics().ok();
        let window = (t1 - t0).as_secs_f64();

        let mut row = Row {
            scenario: scenario.to_owned(),
            step,
            window_s: window,
            ..Row::default()
        };
        let before: HashMap<usize, &PeerSnap> = before.iter().map(|s| (s.id, s)).collect();
        let mut joins = Vec::new();
        let mut connects = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut heard = BTreeMap::new();
        for s in &after {
            seen.insert(s.id);
            let e = &self.expect[&s.id];
            row.rtc_errors += s.rtc_errors;
            row.send_errors += s.send_errors;
            row.decode_errors += s.decode_errors;
            if s.state == State::Connected {
                row.peers += 1;
            }
            if e.step == step {
                match s.state {
                    State::Connecting => {
                        *row.errors.entry("connect_timeout".into()).or_default() += 1
                    }
                    State::IceFailed => *row.errors.entry("ice".into()).or_default() += 1,
                    State::DtlsFailed => *row.errors.entry("dtls".into()).or_default() += 1,
                    State::Connected if e.receiver && s.rx.first_at.is_none() => {
                        *row.errors.entry("no_audio".into()).or_default() += 1
                    }
                    State::Connected => {}
                }
                if let Some(first) = s.rx.first_at {
                    joins.push((first - s.posted_at).as_secs_f64() * 1000.0);
                }
                if let Some(at) = s.connected_at {
                    connects.push((at - s.posted_at).as_secs_f64() * 1000.0);
                }
            }
            if !e.receiver || s.state != State::Connected {
                continue;
            }
            row.receivers += 1;
            let b = before.get(&s.id);
            let (p0, x0, g0) = b.map_or((0, None, 0), |b| (b.rx.packets, b.rx.ext_max, b.rx.gaps));
            let received = s.rx.packets - p0;
            let span = match (x0, s.rx.ext_max) {
                (Some(a), Some(z)) => (z - a).max(0) as u64,
                _ => received,
            };
            let stalled = match s.rx.last_at {
                Some(last) if t1.saturating_duration_since(last) > GAP => {
                    t1.saturating_duration_since(last.max(t0)).as_secs_f64()
                }
                Some(_) => 0.0,
                None => window,
            };
            row.delivered_packets += received;
            row.expected_packets += span.max(received) + (stalled * e.rate) as u64;
            row.gaps_over_100ms += s.rx.gaps - g0;
            if let Some(pcm) = &s.pcm {
                let v = Verdict::judge(s.id, e.role, pcm, &e.want_hz, e.own_hz);
                heard.insert((v.heard_hz.round() * 10.0) as i64, v.heard_hz.round());
                row.verdicts.push(v);
            }
        }
        for (id, o) in &self.outcomes {
            if self.expect[id].step == step
                && let Some((kind, _)) = &o.error
                && !seen.contains(id)
            {
                *row.errors.entry(kind.clone()).or_default() += 1;
            }
        }
        row.heard_total = row.verdicts.len();
        row.heard_ok = row.verdicts.iter().filter(|v| v.ok).count();
        row.heard_hz = heard.into_values().collect();
        row.delivery = if row.expected_packets == 0 {
            0.0
        } else {
            row.delivered_packets as f64 / row.expected_packets as f64
        };
        let per_packet = |cpu: Option<f64>| {
            if row.delivered_packets == 0 {
                0.0
            } else {
                cpu.unwrap_or(0.0) * 1e6 / row.delivered_packets as f64
            }
        };
        let srv = srv1.zip(srv0).map(|(a, b)| a - b);
        let own = own1.zip(own0).map(|(a, b)| a - b);
        row.server_cpu_pct = srv.unwrap_or(0.0) / window * 100.0;
        row.loadgen_cpu_pct = own.unwrap_or(0.0) / window * 100.0;
        row.server_us_per_packet = per_packet(srv);
        row.loadgen_us_per_packet = per_packet(own);
        let rss = self.target.rss_bytes().unwrap_or(0);
        row.server_rss_mb = rss as f64 / 1e6;
        row.server_rss_growth_mb = rss_low.map_or(0.0, |low| rss.saturating_sub(low) as f64 / 1e6);
        row.server_rss_per_peer_kb =
            rss.saturating_sub(self.rss_base) as f64 / 1024.0 / row.peers.max(1) as f64;
        row.join_p50_ms = percentile(&mut joins, 50.0);
        row.join_p95_ms = percentile(&mut joins, 95.0);
        row.join_max_ms = percentile(&mut joins, 100.0);
        row.connect_p50_ms = percentile(&mut connects, 50.0);
        row.connect_p95_ms = percentile(&mut connects, 95.0);
        if let (Some(a), Some(b)) = (&m0, &m1) {
            let name = "sabha_mixer_tick_overruns_total";
            row.late_ticks = metric(b, name) - metric(a, name);
        }
        self.check(&row);
        println!("{}", report::line(&row));
        self.rows.push(row);
        Ok(())
    }

    /// Records why a row fails, if it does.
    fn check(&mut self, row: &Row) {
        let at = format!("{} step {} ({} peers)", row.scenario, row.step, row.peers);
        let min = self.cli.common.min_delivery;
        if row.delivery < min {
            self.failures
                .push(format!("{at}: delivery {:.5} < {min}", row.delivery));
        }
        if row.error_count() > 0 {
            let mut first: Vec<String> = self
                .outcomes
                .values()
                .filter(|o| self.expect[&o.id].step == row.step)
                .filter_map(|o| o.error.as_ref().map(|(_, m)| m.clone()))
                .take(3)
                .collect();
            first.dedup();
            self.failures
                .push(format!("{at}: join errors {:?} {first:?}", row.errors));
        }
        if row.heard_total == 0 {
            self.failures
                .push(format!("{at}: no sampled peer decoded audio"));
        }
        for v in row.verdicts.iter().filter(|v| !v.ok) {
            self.failures.push(format!(
                "{at}: peer {} ({}): {}",
                v.peer,
                v.role,
                v.problem.as_deref().unwrap_or("?")
            ));
        }
    }
}
