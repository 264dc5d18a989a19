//! `sabha-loadgen`: real WebRTC peers against a Sabha server on loopback.
//!
//! A separate binary (and crate) so the production `sabha` never compiles a
//! WebRTC client. See docs/loadgen.md for the scenarios, flags and columns.
//! Exit status: 0 when every check passed, 1 when one failed, 2 for usage
//! or setup errors.

mod api;
mod audio;
mod cli;
mod joiner;
mod peer;
mod report;
mod scenario;
mod shard;
mod target;

use std::process::ExitCode;

use clap::Parser;
use serde_json::json;

use cli::{Cli, Scenario};
use target::Target;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.validate() {
        eprintln!("sabha-loadgen: {e}");
        return ExitCode::from(2);
    }
    let c = &cli.common;
    raise_nofile(peers(&cli.scenario) * 2 + 1024);
    let target = match (&c.spawn, &c.url) {
        (Some(bin), _) => Target::spawn(bin),
        (None, Some(url)) => Target::attach(
            url,
            c.key.as_deref().unwrap_or_default(),
            c.server_pid.unwrap_or_default(),
        ),
        (None, None) => unreachable!("validate() requires one"),
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => {
            eprintln!("sabha-loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let result = scenario::Runner::new(&cli, &target).and_then(scenario::Runner::run);
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sabha-loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let passed = result.failures.is_empty();
    for f in &result.failures {
        eprintln!("FAIL {f}");
    }
    eprintln!(
        "sabha-loadgen: {} ({} of {} sessions DELETEd)",
        if passed {
            "all checks passed"
        } else {
            "checks failed"
        },
        result.deleted.0,
        result.deleted.1
    );
    if let Some(path) = &c.json_out {
        let doc = json!({
            "config": &cli,
            "server": { "base": target.base, "pid": target.pid, "spawned": c.spawn.is_some() },
            "rows": &result.rows,
            "passed": passed,
            "failures": &result.failures,
            "deleted": { "ok": result.deleted.0, "total": result.deleted.1 },
        });
        let title = format!("sabha-loadgen {}", scenario_name(&cli.scenario));
        if let Err(e) = report::write(path, &doc, &result.rows, &title) {
            eprintln!("sabha-loadgen: writing {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn peers(s: &Scenario) -> usize {
    match s {
        Scenario::Fanout { listeners, .. } | Scenario::Storm { listeners, .. } => listeners + 1,
        Scenario::Bridges {
            rooms,
            participants,
            ..
        } => rooms * participants,
    }
}

fn scenario_name(s: &Scenario) -> &'static str {
    match s {
        Scenario::Fanout { .. } => "fanout",
        Scenario::Storm { .. } => "storm",
        Scenario::Bridges { .. } => "bridges",
    }
}

/// One socket per peer, plus HTTP: raise RLIMIT_NOFILE to what the run
/// needs.
fn raise_nofile(want: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let need = want as u64;
    // Past the hard limit only with the privilege to raise it
    // (CAP_SYS_RESOURCE; a container may withhold it even from root);
    // otherwise up to the hard limit.
    if hard < need && setrlimit(Resource::RLIMIT_NOFILE, need, need).is_ok() {
        return;
    }
    let want = need.min(hard);
    if want > soft && setrlimit(Resource::RLIMIT_NOFILE, want, hard).is_err() {
        eprintln!("sabha-loadgen: could not raise RLIMIT_NOFILE to {want} (hard {hard})");
    }
    if hard < need {
        eprintln!("sabha-loadgen: RLIMIT_NOFILE hard limit {hard} < {need} needed; joins may fail");
    }
}
