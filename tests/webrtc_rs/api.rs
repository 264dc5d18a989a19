//! The HTTP side: rooms, tokens, offers and hang-ups, through blocking `ureq`
//! run on tokio's blocking pool. Every request has a global timeout, so a
//! wedged server cannot keep the runtime from shutting down.

use std::time::Duration;

use serde_json::{Value, json};
use ureq::Agent;

use crate::common::OPERATOR_KEY;

const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of one running server, authenticated per request.
#[derive(Clone)]
pub struct Api {
    agent: Agent,
    base: String,
}

/// What the server answered to an offer.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub location: String,
    /// `Retry-After`, empty if absent.
    pub retry_after: String,
    pub body: String,
}

impl Api {
    pub fn new(base: String) -> Self {
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(HTTP_TIMEOUT))
            .build()
            .into();
        Self { agent, base }
    }

    /// `POST /v1/rooms` with the operator key; the new room's id.
    pub async fn create_room(&self, kind: &str) -> Result<String, String> {
        let body = json!({ "name": format!("webrtc-rs {kind}"), "kind": kind });
        let room = self.post_json("/v1/rooms", body, 201).await?;
        room["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("room without an id: {room}"))
    }

    /// `POST /v1/rooms/{id}/tokens`; the token.
    pub async fn mint(&self, room: &str, role: &str, name: &str) -> Result<String, String> {
        let body = json!({ "role": role, "name": name, "ttl_s": 600 });
        let path = format!("/v1/rooms/{room}/tokens");
        let answer = self.post_json(&path, body, 200).await?;
        answer["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("token answer without a token: {answer}"))
    }

    /// `POST` an SDP offer to `path` with a bearer token; any status is returned.
    pub async fn offer(&self, path: &str, token: &str, sdp: String) -> Result<Answer, String> {
        let (agent, url) = (self.agent.clone(), self.url(path));
        let auth = format!("Bearer {token}");
        blocking(move || {
            let mut resp = agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/sdp")
                .send(sdp)
                .map_err(|e| format!("POST {url}: {e}"))?;
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            };
            let (content_type, location) = (header("content-type"), header("location"));
            let retry_after = header("retry-after");
            let status = resp.status().as_u16();
            let body = resp
                .body_mut()
                .read_to_string()
                .map_err(|e| format!("POST {url}: reading the answer: {e}"))?;
            Ok(Answer {
                status,
                content_type,
                location,
                retry_after,
                body,
            })
        })
        .await
    }

    /// `DELETE {location}` (no credentials: the session id is the capability).
    pub async fn delete(&self, location: &str) -> Result<u16, String> {
        let (agent, url) = (self.agent.clone(), self.url(location));
        blocking(move || {
            agent
                .delete(&url)
                .call()
                .map(|r| r.status().as_u16())
                .map_err(|e| format!("DELETE {url}: {e}"))
        })
        .await
    }

    /// Any request, as a hostile client would send it: `(status,
    /// content type)` of the reply, whatever the status.
    pub async fn raw(
        &self,
        method: &'static str,
        path: &str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    ) -> Result<(u16, String), String> {
        let (agent, url) = (self.agent.clone(), self.url(path));
        blocking(move || {
            let mut request = ureq::http::Request::builder().method(method).uri(&url);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let request = request
                .body(body)
                .map_err(|e| format!("{method} {url}: {e}"))?;
            let response = agent
                .run(request)
                .map_err(|e| format!("{method} {url}: {e}"))?;
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            Ok((response.status().as_u16(), content_type))
        })
        .await
    }

    /// `GET /metrics`: the Prometheus text.
    pub async fn metrics(&self) -> Result<String, String> {
        let (agent, url) = (self.agent.clone(), self.url("/metrics"));
        blocking(move || {
            agent
                .get(&url)
                .call()
                .map_err(|e| e.to_string())?
                .body_mut()
                .read_to_string()
                .map_err(|e| e.to_string())
        })
        .await
    }

    async fn post_json(&self, path: &str, body: Value, want: u16) -> Result<Value, String> {
        let (agent, url) = (self.agent.clone(), self.url(path));
        blocking(move || {
            let mut resp = agent
                .post(&url)
                .header("Authorization", &format!("Bearer {OPERATOR_KEY}"))
                .send_json(body)
                .map_err(|e| format!("POST {url}: {e}"))?;
            let status = resp.status().as_u16();
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            if status != want {
                return Err(format!("POST {url}: {status} (want {want}): {text}"));
            }
            serde_json::from_str(&text).map_err(|e| format!("POST {url}: {e}: {text}"))
        })
        .await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("HTTP task: {e}"))?
}
