//! The server's HTTP API, as the load generator uses it: rooms and tokens
//! with the operator key, offers (WHIP, WHEP, `/join`), hang-ups, metrics.
//! Blocking `ureq`, called from the join pool's threads.

use std::time::Duration;

use serde_json::{Value, json};
use ureq::Agent;

const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}: HTTP {1}: {2}")]
    Status(String, u16, String),
    #[error("{0}: {1}")]
    Transport(String, String),
    #[error("{0}: unexpected answer: {1}")]
    Shape(String, String),
}

impl ApiError {
    /// The key under which a join failure is counted: `http_503`, `http_transport`, …
    pub fn kind(&self) -> String {
        match self {
            ApiError::Status(_, code, _) => format!("http_{code}"),
            ApiError::Transport(..) => "http_transport".to_owned(),
            ApiError::Shape(..) => "http_bad_answer".to_owned(),
        }
    }
}

/// A client of one server.
#[derive(Clone)]
pub struct Api {
    agent: Agent,
    base: String,
    key: String,
}

/// An accepted offer.
pub struct Answer {
    pub location: String,
    pub sdp: String,
}

impl Api {
    pub fn new(base: &str, key: &str, pool: usize) -> Api {
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(HTTP_TIMEOUT))
            .max_idle_connections(pool.max(4) * 2)
            .max_idle_connections_per_host(pool.max(4) * 2)
            .build()
            .into();
        Api {
            agent,
            base: base.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
        }
    }

    /// `POST /v1/rooms`; the new room's id.
    pub fn create_room(&self, kind: &str, name: &str) -> Result<String, ApiError> {
        let room = self.post_json("/v1/rooms", json!({"name": name, "kind": kind}))?;
        room["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ApiError::Shape("POST /v1/rooms".into(), room.to_string()))
    }

    /// `POST /v1/rooms/{id}/tokens`: a reusable token of `role`.
    pub fn mint(&self, room: &str, role: &str) -> Result<String, ApiError> {
        let path = format!("/v1/rooms/{room}/tokens");
        let body = json!({"role": role, "name": format!("loadgen {role}"), "ttl_s": 86_400});
        let answer = self.post_json(&path, body)?;
        answer["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ApiError::Shape(path, answer.to_string()))
    }

    fn post_json(&self, path: &str, body: Value) -> Result<Value, ApiError> {
        let url = format!("{}{path}", self.base);
        let what = format!("POST {path}");
        let mut resp = self
            .agent
            .post(&url)
            .header("Authorization", &format!("Bearer {}", self.key))
            .send_json(body)
            .map_err(|e| ApiError::Transport(what.clone(), e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(ApiError::Status(what, status, text));
        }
        serde_json::from_str(&text).map_err(|_| ApiError::Shape(what, text))
    }

    /// `POST` an SDP offer; `201` with a `Location` is the only success.
    pub fn offer(&self, path: &str, token: &str, sdp: String) -> Result<Answer, ApiError> {
        let url = format!("{}{path}", self.base);
        let what = format!("POST {path}");
        let mut resp = self
            .agent
            .post(&url)
            .header("Authorization", &format!("Bearer {token}"))
            .header("Content-Type", "application/sdp")
            .send(sdp)
            .map_err(|e| ApiError::Transport(what.clone(), e.to_string()))?;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| ApiError::Transport(what.clone(), e.to_string()))?;
        if status != 201 {
            return Err(ApiError::Status(what, status, body));
        }
        if !location.starts_with("/v1/sessions/") {
            return Err(ApiError::Shape(what, format!("Location {location:?}")));
        }
        Ok(Answer {
            location,
            sdp: body,
        })
    }

    /// `DELETE {location}`; the status.
    pub fn delete(&self, location: &str) -> Result<u16, ApiError> {
        let url = format!("{}{location}", self.base);
        self.agent
            .delete(&url)
            .call()
            .map(|r| r.status().as_u16())
            .map_err(|e| ApiError::Transport(format!("DELETE {location}"), e.to_string()))
    }

    /// `GET /metrics`.
    pub fn metrics(&self) -> Result<String, ApiError> {
        let url = format!("{}/metrics", self.base);
        let what = "GET /metrics".to_owned();
        let mut resp = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| ApiError::Transport(what.clone(), e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        if status != 200 {
            return Err(ApiError::Status(what, status, text));
        }
        Ok(text)
    }

    /// `GET /healthz` is `200`.
    pub fn healthy(&self) -> bool {
        let url = format!("{}/healthz", self.base);
        matches!(self.agent.get(&url).call(), Ok(r) if r.status().as_u16() == 200)
    }
}

/// The value of an unlabelled counter or gauge in Prometheus text; 0 when absent.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::metric;

    #[test]
    fn reads_a_counter_and_sums_its_labels() {
        let text = "# TYPE x counter\nsabha_mixer_tick_overruns_total 7\n\
                    sabha_mixer_tick_overruns_total_other 9\nb{k=\"1\"} 2\nb{k=\"2\"} 3\n";
        assert_eq!(metric(text, "sabha_mixer_tick_overruns_total"), 7.0);
        assert_eq!(metric(text, "b"), 5.0);
        assert_eq!(metric(text, "absent"), 0.0);
    }
}
