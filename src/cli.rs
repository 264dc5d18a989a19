//! The operator's client commands: `sabha rooms …`, `sabha token …`,
//! `sabha org …`, `sabha keys …`, `sabha attendance …`, `sabha reach …`,
//! `sabha members …` and `sabha pins …`.
//!
//! They talk to a running server over its HTTP API — the same requests a
//! script or a web console would make — so they need no access to its
//! database. Rooms print as JSON; `sabha token` prints the bare token so it
//! can go straight into a variable or a URL. A failed request prints the
//! server's problem+json title and detail and exits non-zero.
//!
//! Blocking `ureq` and no TLS: the default server is loopback; a remote one
//! goes through the operator's own tunnel or TLS proxy on loopback.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use ureq::Agent;
use ureq::http::Response;

use crate::secrets;

/// How the client reaches the server.
#[derive(Clone, Debug, clap::Args)]
pub struct ClientArgs {
    /// Base URL of the server's HTTP API
    #[arg(
        long,
        env = "SABHA_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
    /// Operator key [default: read <data dir>/operator.key]
    #[arg(
        long,
        env = "SABHA_OPERATOR_KEY",
        hide_env_values = true,
        global = true
    )]
    pub key: Option<String>,
    /// Data directory holding operator.key, for the fallback above
    #[arg(long, env = "SABHA_DATA_DIR", default_value = crate::config::DEFAULT_DATA_DIR, global = true)]
    pub data_dir: PathBuf,
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum RoomsCommand {
    /// Create a room; prints it as JSON
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["rally", "bridge"])]
        kind: String,
        /// What WHEP listeners get unless they choose: `low` for a 3G audience
        #[arg(long, value_parser = ["standard", "low"], default_value = "standard")]
        profile: String,
    },
    /// Schedule a room for a unit: its window, zone, recurrence, hosts; prints it as JSON
    Schedule(Box<ScheduleArgs>),
    /// List rooms as JSON
    List,
    /// Show one room as JSON
    Get { id: String },
    /// Delete a room and end its sessions
    Delete { id: String },
    /// Room tokens for each member (or unit) of a unit's subtree, as JSON or CSV
    Invite {
        /// Room id
        room: String,
        /// Unit whose subtree is invited (must be in the room's audience)
        #[arg(long)]
        unit: String,
        /// One invite per member (default) or per unit
        #[arg(long, value_parser = ["member", "unit"], default_value = "member")]
        per: String,
        /// CSV for mail-merge and SMS tools instead of JSON
        #[arg(long)]
        csv: bool,
    },
}

/// `sabha rooms schedule`.
#[derive(Clone, Debug, clap::Args)]
pub struct ScheduleArgs {
    #[arg(long)]
    pub name: String,
    #[arg(long, value_parser = ["rally", "bridge"])]
    pub kind: String,
    /// Start: RFC 3339 (2026-12-07T12:30:00Z) or local (2026-12-07T18:00) in --time-zone
    #[arg(long)]
    pub starts_at: String,
    /// End, in the same forms
    #[arg(long)]
    pub ends_at: String,
    /// IANA zone of the schedule, e.g. Asia/Kolkata [server default]
    #[arg(long)]
    pub time_zone: Option<String>,
    /// Target unit: its subtree is the audience
    #[arg(long)]
    pub unit: Option<String>,
    /// RRULE subset, e.g. FREQ=WEEKLY;BYDAY=MO,TH;COUNT=8
    #[arg(long)]
    pub recurrence: Option<String>,
    /// A host (member id or name); repeat for several
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    #[arg(long)]
    pub capacity: Option<u32>,
    /// Listeners may wait before the start, hearing silence
    #[arg(long)]
    pub lobby: bool,
    #[arg(long, value_parser = ["standard", "low"], default_value = "standard")]
    pub profile: String,
}

impl ScheduleArgs {
    /// The `POST /v1/rooms` body; local times become instants in the zone.
    fn body(&self) -> Result<Value, CliError> {
        let instant = |text: &str| -> Result<String, CliError> {
            if let Ok(t) = text.parse::<jiff::Timestamp>() {
                return Ok(t.to_string());
            }
            let local: jiff::civil::DateTime = text.parse().map_err(|_| {
                CliError::Usage(format!(
                    "{text:?} is neither RFC 3339 nor a local date and time like 2026-12-07T18:00"
                ))
            })?;
            let zone = self.time_zone.as_deref().ok_or_else(|| {
                CliError::Usage(format!("the local time {text:?} needs --time-zone"))
            })?;
            let zone = jiff::tz::TimeZone::get(zone)
                .map_err(|_| CliError::Usage(format!("unknown time zone {zone:?}")))?;
            let t = zone
                .to_ambiguous_zoned(local)
                .compatible()
                .map_err(|e| CliError::Usage(format!("{text:?} in {zone:?}: {e}")))?;
            Ok(t.timestamp().to_string())
        };
        Ok(json!({
            "name": self.name, "kind": self.kind, "profile": self.profile,
            "starts_at": instant(&self.starts_at)?, "ends_at": instant(&self.ends_at)?,
            "time_zone": self.time_zone, "unit": self.unit, "recurrence": self.recurrence,
            "hosts": self.hosts, "capacity": self.capacity, "lobby": self.lobby,
        }))
    }
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum MembersCommand {
    /// Import members from a CSV (id,name,phone,unit) or JSON file; prints the counts
    Import { file: PathBuf },
    /// List members as JSON (of one unit's subtree with --unit)
    List {
        #[arg(long)]
        unit: Option<String>,
    },
    /// Show one member as JSON
    Get { id: String },
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum PinsCommand {
    /// Issue (rotate) PINs for a unit's subtree; prints them once
    Issue {
        #[arg(long)]
        unit: String,
        /// PINs for the members (the default when neither flag is given)
        #[arg(long)]
        members: bool,
        /// PINs for the units (shared booth phones)
        #[arg(long)]
        units: bool,
        /// CSV instead of JSON
        #[arg(long)]
        csv: bool,
    },
}

#[derive(Clone, Debug, clap::Args)]
pub struct TokenArgs {
    /// Room id
    #[arg(long)]
    pub room: String,
    #[arg(long, value_parser = ["host", "speaker", "listener", "participant"])]
    pub role: String,
    /// Display name carried in the token
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime in seconds [server default: 86400]
    #[arg(long = "ttl-s", value_name = "SECONDS")]
    pub ttl_s: Option<u64>,
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum OrgCommand {
    /// Import units from a CSV (id,kind,name,parent) or JSON file; prints the counts
    Import { file: PathBuf },
    /// Show one unit with its ancestors and children as JSON
    Get { id: String },
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create an operator API key; prints it as JSON with its secret (shown once)
    Create {
        /// Who holds it, e.g. "Pune district office"
        #[arg(long)]
        name: String,
        /// Limit the key to this unit's subtree [default: the whole organisation]
        #[arg(long)]
        unit: Option<String>,
    },
    /// List API keys as JSON (never their secrets)
    List,
    /// Revoke an API key by id: it stops working at once
    Revoke { id: String },
}

#[derive(Clone, Debug, clap::Args)]
pub struct AttendanceArgs {
    /// Room id
    pub room: String,
    /// CSV (one row per session) instead of JSON
    #[arg(long)]
    pub csv: bool,
}

#[derive(Clone, Debug, clap::Args)]
pub struct ReachArgs {
    /// Room id
    pub room: String,
    /// Minutes a listener must stay for the booth to count [server default: 5]
    #[arg(long)]
    pub min_minutes: Option<u64>,
    /// Only units of this kind (district, mandal, …)
    #[arg(long)]
    pub kind: Option<String>,
    /// CSV (one row per unit) instead of JSON
    #[arg(long)]
    pub csv: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "no operator key: pass --key, set SABHA_OPERATOR_KEY, or run where {} exists",
        .0.display()
    )]
    NoKey(PathBuf),
    #[error(transparent)]
    Secret(#[from] secrets::SecretError),
    #[error("cannot reach the server: {0}")]
    Http(#[from] ureq::Error),
    /// The server answered with problem+json.
    #[error("{title} ({status}): {detail}")]
    Problem {
        status: u16,
        title: String,
        detail: String,
    },
    #[error("cannot read {}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unexpected answer from the server ({status}): {body}")]
    Unexpected { status: u16, body: String },
    /// The command line itself is wrong (a time that does not parse, say).
    #[error("{0}")]
    Usage(String),
}

#[derive(Deserialize)]
struct Problem {
    title: String,
    status: u16,
    #[serde(default)]
    detail: String,
}

struct Client {
    agent: Agent,
    base: String,
    key: String,
}

/// Runs `sabha rooms …`.
pub fn rooms(args: &ClientArgs, command: &RoomsCommand) -> Result<(), CliError> {
    let client = Client::new(args)?;
    match command {
        RoomsCommand::Create {
            name,
            kind,
            profile,
        } => {
            let body = json!({ "name": name, "kind": kind, "profile": profile });
            print_json(&client.send("POST", "/v1/rooms", Some(body))?)
        }
        RoomsCommand::Schedule(schedule) => {
            print_json(&client.send("POST", "/v1/rooms", Some(schedule.body()?))?)
        }
        RoomsCommand::List => print_json(&client.send("GET", "/v1/rooms", None)?),
        RoomsCommand::Get { id } => {
            print_json(&client.send("GET", &format!("/v1/rooms/{}", segment(id)), None)?)
        }
        RoomsCommand::Delete { id } => {
            client.send("DELETE", &format!("/v1/rooms/{}", segment(id)), None)?;
            eprintln!("room {id} deleted");
            Ok(())
        }
        RoomsCommand::Invite {
            room,
            unit,
            per,
            csv,
        } => {
            let path = format!(
                "/v1/rooms/{}/invite?unit={}&per={per}",
                segment(room),
                segment(unit)
            );
            if *csv {
                print!("{}", client.request_text("GET", &path, None, "text/csv")?);
                Ok(())
            } else {
                print_json(&client.send("GET", &path, None)?)
            }
        }
    }
}

/// Runs `sabha members …`.
pub fn members(args: &ClientArgs, command: &MembersCommand) -> Result<(), CliError> {
    let client = Client::new(args)?;
    match command {
        MembersCommand::Import { file } => print_json(&client.put_file("/v1/members", file)?),
        MembersCommand::List { unit } => {
            let path = match unit {
                Some(unit) => format!("/v1/members?unit={}", segment(unit)),
                None => "/v1/members".to_owned(),
            };
            print_json(&client.send("GET", &path, None)?)
        }
        MembersCommand::Get { id } => {
            print_json(&client.send("GET", &format!("/v1/members/{}", segment(id)), None)?)
        }
    }
}

/// Runs `sabha pins issue …`: the PINs are shown this once.
pub fn pins(args: &ClientArgs, command: &PinsCommand) -> Result<(), CliError> {
    let client = Client::new(args)?;
    let PinsCommand::Issue {
        unit,
        members,
        units,
        csv,
    } = command;
    let body = json!({ "unit": unit, "members": *members || !*units, "units": *units });
    if *csv {
        print!(
            "{}",
            client.request_text("POST", "/v1/pins", Some(body), "text/csv")?
        );
        Ok(())
    } else {
        print_json(&client.send("POST", "/v1/pins", Some(body))?)
    }
}

/// Runs `sabha token …`: prints the token alone.
pub fn token(args: &ClientArgs, token: &TokenArgs) -> Result<(), CliError> {
    let client = Client::new(args)?;
    let mut body = json!({ "role": token.role });
    if let Some(name) = &token.name {
        body["name"] = json!(name);
    }
    if let Some(ttl) = token.ttl_s {
        body["ttl_s"] = json!(ttl);
    }
    let path = format!("/v1/rooms/{}/tokens", segment(&token.room));
    let answer = client.send("POST", &path, Some(body))?;
    match answer.get("token").and_then(Value::as_str) {
        Some(token) => {
            println!("{token}");
            Ok(())
        }
        None => Err(CliError::Unexpected {
            status: 200,
            body: answer.to_string(),
        }),
    }
}

/// Runs `sabha org …`.
pub fn org(args: &ClientArgs, command: &OrgCommand) -> Result<(), CliError> {
    let client = Client::new(args)?;
    match command {
        OrgCommand::Import { file } => print_json(&client.put_file("/v1/org", file)?),
        OrgCommand::Get { id } => {
            print_json(&client.send("GET", &format!("/v1/org/{}", segment(id)), None)?)
        }
    }
}

/// Runs `sabha keys …`.
pub fn keys(args: &ClientArgs, command: &KeysCommand) -> Result<(), CliError> {
    let client = Client::new(args)?;
    match command {
        KeysCommand::Create { name, unit } => {
            let body = json!({ "name": name, "unit": unit });
            print_json(&client.send("POST", "/v1/keys", Some(body))?)?;
            eprintln!("the secret is shown only this once: store it now");
            Ok(())
        }
        KeysCommand::List => print_json(&client.send("GET", "/v1/keys", None)?),
        KeysCommand::Revoke { id } => {
            client.send("DELETE", &format!("/v1/keys/{}", segment(id)), None)?;
            eprintln!("key {id} revoked");
            Ok(())
        }
    }
}

/// Runs `sabha attendance ROOM [--csv]`: prints the room's attendance.
pub fn attendance(args: &ClientArgs, attendance: &AttendanceArgs) -> Result<(), CliError> {
    let client = Client::new(args)?;
    let path = format!("/v1/rooms/{}/attendance", segment(&attendance.room));
    if attendance.csv {
        print!("{}", client.get_text(&format!("{path}.csv"))?);
        Ok(())
    } else {
        print_json(&client.send("GET", &path, None)?)
    }
}

/// Runs `sabha reach ROOM [--min-minutes N] [--kind K] [--csv]`.
pub fn reach(args: &ClientArgs, reach: &ReachArgs) -> Result<(), CliError> {
    let client = Client::new(args)?;
    let mut query = Vec::new();
    if let Some(minutes) = reach.min_minutes {
        query.push(format!("min_minutes={minutes}"));
    }
    if let Some(kind) = &reach.kind {
        query.push(format!("kind={}", segment(kind)));
    }
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    let room = segment(&reach.room);
    if reach.csv {
        print!(
            "{}",
            client.get_text(&format!("/v1/rooms/{room}/reach.csv{query}"))?
        );
        Ok(())
    } else {
        print_json(&client.send("GET", &format!("/v1/rooms/{room}/reach{query}"), None)?)
    }
}

impl Client {
    /// A GET or POST (JSON body) whose answer is text of type `accept`.
    fn request_text(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        accept: &str,
    ) -> Result<String, CliError> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.key);
        let mut response = match body {
            None => self
                .agent
                .get(&url)
                .header("Authorization", &auth)
                .header("Accept", accept)
                .call()?,
            Some(body) => {
                debug_assert_eq!(method, "POST");
                self.agent
                    .post(&url)
                    .header("Authorization", &auth)
                    .header("Accept", accept)
                    .send_json(body)?
            }
        };
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string()?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(problem(status, &text))
        }
    }

    /// PUTs a CSV or JSON file (by its extension); the JSON answer.
    fn put_file(&self, path: &str, file: &std::path::Path) -> Result<Value, CliError> {
        let body = std::fs::read(file).map_err(|source| CliError::File {
            path: file.to_owned(),
            source,
        })?;
        let json = file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let content_type = if json { "application/json" } else { "text/csv" };
        let response = self
            .agent
            .put(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {}", self.key))
            .content_type(content_type)
            .send(&body[..])?;
        answer(response)
    }

    /// A GET whose answer is text (CSV), or the problem.
    fn get_text(&self, path: &str) -> Result<String, CliError> {
        let url = format!("{}{path}", self.base);
        let mut response = self
            .agent
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.key))
            .call()?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string()?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(problem(status, &text))
        }
    }

    fn new(args: &ClientArgs) -> Result<Self, CliError> {
        let key = match &args.key {
            Some(key) => key.clone(),
            None => secrets::read_operator_key(&args.data_dir)?
                .ok_or_else(|| CliError::NoKey(args.data_dir.join(secrets::OPERATOR_KEY_FILE)))?,
        };
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(15)))
            .build()
            .into();
        Ok(Self {
            agent,
            base: args.server.trim_end_matches('/').to_owned(),
            key,
        })
    }

    /// Sends one request; the JSON answer (`null` for 204), or the problem.
    fn send(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.key);
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call()?,
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call()?,
            (_, body) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(body.unwrap_or(Value::Null))?,
        };
        answer(response)
    }
}

fn answer(mut response: Response<ureq::Body>) -> Result<Value, CliError> {
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string()?;
    if (200..300).contains(&status) {
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        return serde_json::from_str(&text)
            .map_err(|_| CliError::Unexpected { status, body: text });
    }
    Err(problem(status, &text))
}

/// The error for a non-2xx answer: its problem+json, else its text.
fn problem(status: u16, text: &str) -> CliError {
    match serde_json::from_str::<Problem>(text) {
        Ok(p) => CliError::Problem {
            status: p.status,
            title: p.title,
            detail: p.detail,
        },
        Err(_) => CliError::Unexpected {
            status,
            body: text.chars().take(500).collect(),
        },
    }
}

fn print_json(value: &Value) -> Result<(), CliError> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("a Value serializes")
    );
    Ok(())
}

/// Percent-encodes a path segment: room ids are `[a-z0-9]`, but a typo must
/// not turn into another path.
fn segment(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_print_title_and_detail() {
        let body =
            r#"{"type":"about:blank","title":"Not Found","status":404,"detail":"no such room"}"#;
        let error = problem(404, body);
        assert_eq!(error.to_string(), "Not Found (404): no such room");
    }

    #[test]
    fn non_problem_errors_keep_the_status() {
        let error = problem(502, "Bad Gateway");
        assert_eq!(
            error.to_string(),
            "unexpected answer from the server (502): Bad Gateway"
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("abc123"), "abc123");
        assert_eq!(segment("../x y"), "..%2Fx%20y");
    }
}
