//! The server under test: attached (`--url`, `--key`, `--server-pid`) or
//! spawned (`--spawn PATH`: `sabha serve` on free loopback ports with a
//! temporary data directory), and its CPU and memory from `/proc`.

use std::fs;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::api::Api;

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The per-IP rate limits of a spawned server, lifted (see `spawn`).
const UNTHROTTLED: [(&str, &str); 4] = [
    ("SABHA_SESSION_RATE_BURST", "1000000"),
    ("SABHA_SESSION_RATE_PER_S", "1000000"),
    ("SABHA_MINT_RATE_BURST", "1000000"),
    ("SABHA_MINT_RATE_PER_S", "1000000"),
];

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("--url {0}: only http://127.x.y.z:PORT is allowed (loopback only)")]
    NotLoopback(String),
    #[error("spawn {0}: {1}")]
    Spawn(String, std::io::Error),
    #[error("`sabha serve` did not answer /healthz within {0:?}; log {1}")]
    NotHealthy(Duration, String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub struct Target {
    pub base: String,
    pub key: String,
    pub pid: u32,
    child: Option<Child>,
    dir: Option<PathBuf>,
}

impl Target {
    /// A running server; the URL must be on 127.0.0.0/8.
    pub fn attach(url: &str, key: &str, pid: u32) -> Result<Target, TargetError> {
        loopback_base(url)?;
        Ok(Target {
            base: url.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
            pid,
            child: None,
            dir: None,
        })
    }

    /// Starts `sabha serve` from `bin`, stopped when dropped.
    pub fn spawn(bin: &Path) -> Result<Target, TargetError> {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("sabha-loadgen-{}-{stamp}", std::process::id()));
        let data = dir.join("data");
        fs::create_dir_all(&data)?;
        let key = format!("sabha-loadgen-{stamp:x}");
        let http = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let log_path = dir.join("server.log");
        let log = fs::File::create(&log_path)?;
        let child = Command::new(bin)
            .args([
                "serve",
                "--http",
                &http.to_string(),
                // Port 0: each media thread binds a free port of its own;
                // peers learn theirs from the SDP answer.
                "--media",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(&data)
            .env("SABHA_OPERATOR_KEY", &key)
            // Every peer of the load generator connects from 127.0.0.1: the
            // per-IP limits, meant for one NAT address, would measure
            // themselves rather than the server.
            .envs(UNTHROTTLED.iter().map(|&(k, v)| (k, v)))
            .env(
                "SABHA_LOG",
                std::env::var("SABHA_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| TargetError::Spawn(bin.display().to_string(), e))?;
        let mut target = Target {
            base: format!("http://{http}"),
            key,
            pid: child.id(),
            child: Some(child),
            dir: Some(dir),
        };
        let api = Api::new(&target.base, &target.key, 1);
        let deadline = Instant::now() + START_TIMEOUT;
        while !api.healthy() {
            let exited = target
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                target.keep_dir();
                return Err(TargetError::NotHealthy(
                    START_TIMEOUT,
                    log_path.display().to_string(),
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(target)
    }

    fn keep_dir(&mut self) {
        self.dir = None;
    }

    /// CPU seconds (user + system) the server has used.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(&format!("/proc/{}/stat", self.pid))
    }

    /// Resident memory in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_bytes(&format!("/proc/{}/status", self.pid))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Checks that `url` is `http://` to an address in 127.0.0.0/8.
pub fn loopback_base(url: &str) -> Result<SocketAddr, TargetError> {
    let bad = || TargetError::NotLoopback(url.to_owned());
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let authority = rest.split('/').next().unwrap_or("");
    let addr: SocketAddr = authority.parse().map_err(|_| bad())?;
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => Ok(addr),
        _ => Err(bad()),
    }
}

fn clock_ticks() -> f64 {
    use nix::unistd::{SysconfVar, sysconf};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// utime + stime of a `/proc/<pid>/stat` file, in seconds.
pub fn cpu_seconds(stat_path: &str) -> Option<f64> {
    let text = fs::read_to_string(stat_path).ok()?;
    parse_cpu_ticks(&text).map(|t| t as f64 / clock_ticks())
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces; fields restart after its ')'.
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Field 3 (state) is f[0], so utime (14) is f[11] and stime (15) f[12].
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// VmRSS of a `/proc/<pid>/status` file, in bytes.
pub fn rss_bytes(status_path: &str) -> Option<u64> {
    let text = fs::read_to_string(status_path).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_are_accepted() {
        assert!(loopback_base("http://127.0.0.1:8080").is_ok());
        assert!(loopback_base("http://127.3.2.1:80/").is_ok());
        for bad in [
            "http://10.0.0.1:8080",
            "http://localhost:8080",
            "https://127.0.0.1:8080",
            "http://[::1]:8080",
            "http://127.0.0.1",
        ] {
            assert!(loopback_base(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_proc_stat_with_a_spaced_name() {
        let stat = "1234 (sabha (serve)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0 100";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert!(cpu_seconds("/proc/self/stat").is_some());
        assert!(rss_bytes("/proc/self/status").unwrap() > 0);
    }
}
