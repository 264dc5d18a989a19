//! The join pool: a few threads that build a peer's offer, POST it, apply
//! the answer and hand the peer to its shard. Joins are paced by the caller
//! ([`Joiner::join_paced`]), so `--ramp` is the rate of POSTs.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::api::Api;
use crate::peer::{Peer, Send};
use crate::shard::Adder;

/// One peer to join.
#[derive(Clone)]
pub struct Job {
    pub id: usize,
    /// `/v1/rooms/{id}/whep`, `…/whip`, `…/join`, with any query.
    pub path: String,
    pub token: Arc<str>,
    pub send: Send,
    pub sampled: bool,
    /// Sends RTCP receiver reports.
    pub reports: bool,
    pub shard: usize,
}

/// How a join ended at the HTTP step.
pub struct Outcome {
    pub id: usize,
    /// The failure kind (`http_503`, `sdp`, `socket`, …) and its message.
    pub error: Option<(String, String)>,
}

pub struct Joiner {
    jobs: Option<mpsc::Sender<Job>>,
    pub outcomes: mpsc::Receiver<Outcome>,
    threads: Vec<JoinHandle<()>>,
    /// Locations of accepted sessions, DELETEd at the end.
    pub locations: Arc<Mutex<Vec<String>>>,
}

impl Joiner {
    pub fn start(api: &Api, shards: Vec<Adder>, threads: usize) -> Joiner {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let (out_tx, outcomes) = mpsc::channel();
        let locations = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads.max(1))
            .map(|i| {
                let (api, shards, jobs, out, locs) = (
                    api.clone(),
                    shards.clone(),
                    jobs_rx.clone(),
                    out_tx.clone(),
                    locations.clone(),
                );
                thread::Builder::new()
                    .name(format!("join-{i}"))
                    .spawn(move || worker(&api, &shards, &jobs, &out, &locs))
                    .expect("spawn a join thread")
            })
            .collect();
        Joiner {
            jobs: Some(jobs_tx),
            outcomes,
            threads,
            locations,
        }
    }

    /// Queues `jobs` at `rate` per second (the first at once), calling
    /// `progress` between them; stops early at `deadline`. Returns how many
    /// were queued.
    pub fn join_paced(
        &self,
        jobs: Vec<Job>,
        rate: f64,
        deadline: Instant,
        mut progress: impl FnMut(usize),
    ) -> usize {
        let Some(tx) = &self.jobs else { return 0 };
        let start = Instant::now();
        let every = Duration::from_secs_f64(1.0 / rate.max(0.001));
        for (n, job) in jobs.into_iter().enumerate() {
            let due = start + every * n as u32;
            let now = Instant::now();
            if due > deadline {
                return n;
            }
            if due > now {
                thread::sleep(due - now);
            }
            if tx.send(job).is_err() {
                return n;
            }
            progress(n + 1);
        }
        usize::MAX
    }

    /// DELETEs every accepted session and stops the threads.
    pub fn finish(mut self, api: &Api) -> (usize, usize) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let locations =
            std::mem::take(&mut *self.locations.lock().unwrap_or_else(|p| p.into_inner()));
        let chunks: Vec<Vec<String>> = locations.chunks(256).map(<[String]>::to_vec).collect();
        let mut ok = 0;
        let total = locations.len();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let api = api.clone();
                thread::spawn(move || {
                    chunk
                        .iter()
                        .filter(|l| matches!(api.delete(l), Ok(200..=299)))
                        .count()
                })
            })
            .collect();
        for h in handles {
            ok += h.join().unwrap_or(0);
        }
        (ok, total)
    }
}

fn worker(
    api: &Api,
    shards: &[Adder],
    jobs: &Mutex<mpsc::Receiver<Job>>,
    out: &mpsc::Sender<Outcome>,
    locations: &Mutex<Vec<String>>,
) {
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        let Ok(job) = job else { return };
        let _ = out.send(join_one(api, shards, job, locations));
    }
}

fn join_one(api: &Api, shards: &[Adder], job: Job, locations: &Mutex<Vec<String>>) -> Outcome {
    let fail = |kind: &str, msg: String| Outcome {
        id: job.id,
        error: Some((kind.to_owned(), msg)),
    };
    let (mut peer, sdp) = match Peer::offer(job.id, job.sampled, job.reports, job.send.clone()) {
        Ok(x) => x,
        Err(e) => return fail("offer", e.to_string()),
    };
    // The clock of join → first audio starts at the POST.
    let posted_at = Instant::now();
    peer.posted_at = posted_at;
    let answer = match api.offer(&job.path, &job.token, sdp) {
        Ok(a) => a,
        Err(e) => {
            return Outcome {
                id: job.id,
                error: Some((e.kind(), e.to_string())),
            };
        }
    };
    locations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(answer.location);
    let error = match peer.answer(answer.sdp) {
        Err(e) => Some(("sdp".to_owned(), e.to_string())),
        Ok(()) => shards[job.shard % shards.len()]
            .add(peer)
            .err()
            .map(|e| ("shard".to_owned(), e.to_string())),
    };
    Outcome { id: job.id, error }
}
