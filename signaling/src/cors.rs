//! CORS for browser clients served from another origin.
//!
//! Two policies, because two kinds of routes:
//! - **open**: WHEP and `DELETE /v1/sessions/{id}`. A listener page on any
//!   site should be able to play a rally. CORS would add no protection here:
//!   the bearer token (or the unguessable session id) is the capability, and
//!   no cookies are involved. Open to any origin unless
//!   [`CorsConfig::whep_any_origin`] is turned off.
//! - **configured**: everything else (operator API, WHIP, join). Only the
//!   origins in [`CorsConfig::origins`]; none by default, so only same-origin
//!   pages and non-browser clients (OBS, curl, the CLI) call them.
//!
//! Both allow `Content-Type` and `Authorization` request headers and expose
//! `Location` (WHIP/WHEP clients need it to DELETE their session).

use std::time::Duration;

use axum::http::{HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Which browser origins may call the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorsConfig {
    /// Origins allowed on every route.
    pub origins: Origins,
    /// Whether WHEP and session DELETE accept any origin (default `true`).
    pub whep_any_origin: bool,
}

/// A set of origins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origins {
    Any,
    /// Exact origins, e.g. `https://rally.example.org`. Empty: none.
    List(Vec<HeaderValue>),
}

/// A configured origin that cannot be one.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid CORS origin {0:?}: expected scheme://host[:port] or *")]
pub struct CorsError(pub String);

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            origins: Origins::List(Vec::new()),
            whep_any_origin: true,
        }
    }
}

impl CorsConfig {
    /// Parses configured origins: `*` for any, else `scheme://host[:port]`.
    pub fn parse(origins: &[String], whep_any_origin: bool) -> Result<Self, CorsError> {
        let mut list = Vec::with_capacity(origins.len());
        for origin in origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
            if origin == "*" {
                return Ok(Self {
                    origins: Origins::Any,
                    whep_any_origin,
                });
            }
            list.push(parse_origin(origin)?);
        }
        Ok(Self {
            origins: Origins::List(list),
            whep_any_origin,
        })
    }

    /// The layer for WHEP and session routes.
    pub fn open_layer(&self) -> CorsLayer {
        if self.whep_any_origin {
            layer(AllowOrigin::any())
        } else {
            self.configured_layer()
        }
    }

    /// The layer for every other route.
    pub fn configured_layer(&self) -> CorsLayer {
        layer(match &self.origins {
            Origins::Any => AllowOrigin::any(),
            Origins::List(list) => AllowOrigin::list(list.iter().cloned()),
        })
    }
}

fn parse_origin(origin: &str) -> Result<HeaderValue, CorsError> {
    let invalid = || CorsError(origin.to_owned());
    let (scheme, rest) = origin.split_once("://").ok_or_else(invalid)?;
    let scheme_ok = matches!(scheme, "http" | "https");
    let host_ok = !rest.is_empty() && !rest.contains(['/', '?', '#', ' ']);
    if !(scheme_ok && host_ok) {
        return Err(invalid());
    }
    HeaderValue::from_str(origin).map_err(|_| invalid())
}

fn layer(origin: AllowOrigin) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::PATCH])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
        .expose_headers([header::LOCATION])
        .max_age(Duration::from_secs(600))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_is_open_whep_and_no_other_origin() {
        let config = CorsConfig::default();
        assert_eq!(config.origins, Origins::List(vec![]));
        assert!(config.whep_any_origin);
    }

    #[test]
    fn parses_origins() {
        let config = CorsConfig::parse(
            &strings(&["https://a.example", " http://b:8080 ", ""]),
            true,
        )
        .unwrap();
        assert_eq!(
            config.origins,
            Origins::List(vec![
                HeaderValue::from_static("https://a.example"),
                HeaderValue::from_static("http://b:8080"),
            ])
        );
    }

    #[test]
    fn star_is_any() {
        let config = CorsConfig::parse(&strings(&["https://a.example", "*"]), false).unwrap();
        assert_eq!(config.origins, Origins::Any);
    }

    #[test]
    fn rejects_non_origins() {
        for bad in [
            "example.org",
            "https://a.example/",
            "ftp://x",
            "https://",
            "https://a b",
        ] {
            assert!(CorsConfig::parse(&strings(&[bad]), true).is_err(), "{bad}");
        }
    }
}
