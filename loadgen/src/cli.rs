//! Command line: the server under test, shared knobs and one subcommand per
//! scenario. Every run is bounded (`--duration`, [`MAX_PEERS`]).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

/// Hard cap on peers in one run: the server's default session limit.
pub const MAX_PEERS: usize = 20_000;

#[derive(Parser, Debug, Serialize)]
#[command(
    name = "sabha-loadgen",
    version,
    about = "Real WebRTC peers (webrtc-rs sans-IO) against a Sabha server on loopback"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Args, Debug, Serialize)]
pub struct Common {
    /// Base URL of a running server (only 127.0.0.0/8).
    #[arg(long, global = true, conflicts_with = "spawn", requires_all = ["key", "server_pid"])]
    pub url: Option<String>,
    /// Operator key of that server.
    #[arg(
        long,
        global = true,
        env = "SABHA_OPERATOR_KEY",
        hide_env_values = true
    )]
    #[serde(skip)]
    pub key: Option<String>,
    /// Pid of that server, for CPU and RSS from /proc.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Start `PATH serve` on free loopback ports with a temporary data dir,
    /// and stop it at the end.
    #[arg(long, global = true)]
    pub spawn: Option<PathBuf>,
    /// Worker threads, each owning a shard of the peers and their sockets.
    #[arg(long, global = true, default_value_t = 1)]
    pub threads: usize,
    /// Threads doing the HTTP signaling of joins.
    #[arg(long, global = true, default_value_t = 8)]
    pub http_threads: usize,
    /// Joins per second.
    #[arg(long, global = true, default_value_t = 200.0)]
    pub ramp: f64,
    /// Every K-th receiver decodes its audio and checks the tone.
    #[arg(long, global = true, default_value_t = 50)]
    pub decode_every: usize,
    /// Measuring window after each step settles, seconds.
    #[arg(long, global = true, default_value_t = 10.0)]
    pub hold: f64,
    /// Upper bound of the whole run, seconds; past it the run stops and fails.
    #[arg(long, global = true, default_value_t = 900.0)]
    pub duration: f64,
    /// Pass when every step's delivery ratio is at least this.
    #[arg(long, global = true, default_value_t = 0.999)]
    pub min_delivery: f64,
    /// Peers send no RTCP receiver reports (some SIP phones send none):
    /// the server then plans its in-band FEC for the loss it assumes of an
    /// unreported path, as before it read reports. Compares the two costs.
    #[arg(long, global = true)]
    pub no_reports: bool,
    /// Write every row and the configuration here, and a plot to FILE.svg.
    #[arg(long, global = true)]
    pub json_out: Option<PathBuf>,
}

#[derive(Subcommand, Debug, Serialize)]
pub enum Scenario {
    /// One WHIP publisher and N WHEP listeners, added in steps.
    Fanout {
        #[arg(long)]
        listeners: usize,
        /// Listeners added per step (default: all in one step).
        #[arg(long)]
        step: Option<usize>,
        #[arg(long, value_enum, default_value_t = Profile::Standard)]
        profile: Profile,
    },
    /// N listeners all joining within S seconds; every join must succeed.
    Storm {
        #[arg(long)]
        listeners: usize,
        /// Seconds over which the joins are spread evenly.
        #[arg(long)]
        within: f64,
        #[arg(long, value_enum, default_value_t = Profile::Standard)]
        profile: Profile,
    },
    /// M bridges of P members, T of them talking (distinct tones), the
    /// rest silent (DTX).
    Bridges {
        #[arg(long)]
        rooms: usize,
        #[arg(long)]
        participants: usize,
        /// 1 to 4 (the mixer mixes the 4 loudest).
        #[arg(long)]
        talkers: usize,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Standard,
    Low,
}

impl Profile {
    /// Packets per second a listener of this profile gets.
    pub fn packet_rate(self) -> f64 {
        match self {
            Profile::Standard => 50.0,
            Profile::Low => 1000.0 / 60.0,
        }
    }
}

impl Cli {
    /// Checks what clap cannot: bounds and combinations.
    pub fn validate(&self) -> Result<(), String> {
        let c = &self.common;
        if c.url.is_none() && c.spawn.is_none() {
            return Err(
                "give --spawn PATH_TO_SABHA or --url URL --key KEY --server-pid PID".into(),
            );
        }
        if c.threads == 0 || c.threads > 64 || c.http_threads == 0 || c.http_threads > 256 {
            return Err("--threads must be 1..=64 and --http-threads 1..=256".into());
        }
        if !(c.ramp > 0.0 && c.ramp <= 10_000.0) {
            return Err("--ramp must be in (0, 10000] joins/s".into());
        }
        if c.decode_every == 0 {
            return Err("--decode-every must be at least 1".into());
        }
        if !(c.hold >= 1.0 && c.hold <= 3600.0 && c.duration > 0.0 && c.duration <= 86_400.0) {
            return Err("--hold must be 1..=3600 s and --duration 0..=86400 s".into());
        }
        if !(0.0..=1.0).contains(&c.min_delivery) {
            return Err("--min-delivery must be in [0, 1]".into());
        }
        let peers = match &self.scenario {
            Scenario::Fanout {
                listeners, step, ..
            } => {
                if step == &Some(0) {
                    return Err("--step must be at least 1".into());
                }
                listeners + 1
            }
            Scenario::Storm {
                listeners, within, ..
            } => {
                if !(*within > 0.0 && *within <= 3600.0) {
                    return Err("--within must be in (0, 3600] s".into());
                }
                listeners + 1
            }
            Scenario::Bridges {
                rooms,
                participants,
                talkers,
            } => {
                if !(1..=4).contains(talkers) || talkers > participants {
                    return Err("--talkers must be 1..=4 and at most --participants".into());
                }
                if *participants < 2 {
                    return Err("--participants must be at least 2".into());
                }
                rooms * participants
            }
        };
        if !(2..=MAX_PEERS).contains(&peers) {
            return Err(format!("{peers} peers: the cap is {MAX_PEERS}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<(), String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        cli.validate()
    }

    #[test]
    fn bounds_and_combinations_are_checked() {
        let spawn = ["sabha-loadgen", "--spawn", "/bin/sabha"];
        let ok = |rest: &[&str]| parse(&[&spawn[..], rest].concat());
        assert!(ok(&["fanout", "--listeners", "20"]).is_ok());
        assert!(ok(&["fanout", "--listeners", "20000"]).is_err());
        assert!(ok(&["fanout", "--listeners", "20", "--step", "0"]).is_err());
        assert!(
            ok(&[
                "bridges",
                "--rooms",
                "2",
                "--participants",
                "5",
                "--talkers",
                "2"
            ])
            .is_ok()
        );
        assert!(
            ok(&[
                "bridges",
                "--rooms",
                "2",
                "--participants",
                "5",
                "--talkers",
                "5"
            ])
            .is_err()
        );
        assert!(ok(&["storm", "--listeners", "30", "--within", "0"]).is_err());
        assert!(parse(&["sabha-loadgen", "fanout", "--listeners", "2"]).is_err());
        let url = ["sabha-loadgen", "--url", "http://127.0.0.1:1", "--key", "k"];
        assert!(parse(&[&url[..], &["fanout", "--listeners", "2"]].concat()).is_err());
    }
}
