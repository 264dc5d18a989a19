//! Who may call what: the operator key and room tokens, as axum extractors.
//!
//! Two kinds of credentials, both sent as `Authorization: Bearer <secret>`:
//! - the **operator key** manages rooms and mints tokens. It also works as a
//!   `host` token for every room, so OBS or a test can publish without
//!   minting first. Compared in constant time; only accepted in the header.
//!   Beside the root key, stored **API keys** ([`crate::keys`]) are operator
//!   keys too, each with a [`Scope`]: a unit's subtree or the organisation.
//! - a **room token** ([`crate::token`]) grants one role in one room. Browsers
//!   cannot always set headers (an `<audio>`-driving player, a share link), so
//!   WHIP/WHEP/join also accept it as `?token=`.
//!
//! [`Operator`] and [`Grant`] are extractors: a handler that names one in its
//! arguments cannot run unauthenticated. They only say *who* is calling;
//! whether that caller may act on this room in this way is the handler's
//! check ([`Grant::check_room`], [`crate::sessions`]' role table).

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use serde::Deserialize;

use crate::app::AppState;
use crate::backend::Role;
use crate::problem::ApiError;
use crate::scope::Scope;
use crate::timestamp::unix_now;
use crate::token::{Claims, TokenError, TokenKeys};

/// The operator's bearer key. Its `Debug` does not print it.
#[derive(Clone)]
pub struct OperatorKey(String);

impl OperatorKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// Whether `presented` is this key, in time independent of where they
    /// differ (the length is not secret).
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The key itself, for the code that stores or prints it once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorKey(<redacted>)")
    }
}

/// The server's credentials: token keys and the operator key. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Auth {
    inner: Arc<AuthInner>,
}

#[derive(Debug)]
struct AuthInner {
    tokens: TokenKeys,
    operator: OperatorKey,
}

impl Auth {
    /// `jwt_secret` signs room tokens; `operator` manages rooms.
    pub fn new(jwt_secret: &[u8], operator: OperatorKey) -> Self {
        let tokens = TokenKeys::new(jwt_secret);
        Self {
            inner: Arc::new(AuthInner { tokens, operator }),
        }
    }

    pub fn tokens(&self) -> &TokenKeys {
        &self.inner.tokens
    }

    /// Resolves a presented bearer secret into what it grants.
    pub fn grant(&self, presented: &str, now: u64) -> Result<Grant, AuthError> {
        if self.inner.operator.matches(presented) {
            return Ok(Grant::operator());
        }
        Ok(self.inner.tokens.verify(presented, now)?.into())
    }

    /// Like [`Auth::grant`] for a secret found in a URL (`?token=`): room
    /// tokens only. The operator key never travels in URLs, which end up in
    /// logs and browser history.
    pub fn grant_from_url(&self, presented: &str, now: u64) -> Result<Grant, AuthError> {
        if self.inner.operator.matches(presented) {
            return Err(AuthError::Invalid);
        }
        self.grant(presented, now)
    }
}

/// Why a request is not authenticated. Each maps to 401 with a
/// `WWW-Authenticate: Bearer` challenge (RFC 6750).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this request needs a bearer token (Authorization: Bearer <token>)")]
    Missing,
    #[error("the token is invalid")]
    Invalid,
    #[error("the token has expired")]
    Expired,
}

impl AuthError {
    /// The `WWW-Authenticate` value.
    pub fn challenge(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Missing => r#"Bearer realm="sabha""#,
            Self::Invalid => {
                r#"Bearer realm="sabha", error="invalid_token", error_description="the token is invalid""#
            }
            Self::Expired => {
                r#"Bearer realm="sabha", error="invalid_token", error_description="the token has expired""#
            }
        })
    }
}

impl From<TokenError> for AuthError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::Expired => Self::Expired,
            TokenError::Invalid | TokenError::Signing(_) => Self::Invalid,
        }
    }
}

/// What the caller may do in which room: from a room token, or from the
/// operator key (any room, as host).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// `None`: every room (operator key).
    pub room: Option<String>,
    pub role: Role,
    /// Display name from the token.
    pub name: Option<String>,
    /// Member id from the token, if it was issued to a member.
    pub member: Option<String>,
    /// Unit from the token: where the holder belongs, for reach.
    pub unit: Option<String>,
    /// For an operator key (`room: None`): the rooms it may act in as host
    /// ([`crate::scope::room_in_scope`]). Room tokens are limited by `room`
    /// and carry [`Scope::Organisation`].
    pub scope: Scope,
}

impl Grant {
    fn operator() -> Self {
        Self::operator_in(Scope::Organisation)
    }

    /// The host grant of an operator key with `scope`.
    pub fn operator_in(scope: Scope) -> Self {
        Self {
            room: None,
            role: Role::Host,
            name: None,
            member: None,
            unit: None,
            scope,
        }
    }

    /// 403 unless this grant covers `room`.
    pub fn check_room(&self, room: &str) -> Result<(), ApiError> {
        match &self.room {
            Some(own) if own != room => Err(ApiError::Forbidden(
                "this token is for another room".to_owned(),
            )),
            _ => Ok(()),
        }
    }
}

impl From<Claims> for Grant {
    fn from(claims: Claims) -> Self {
        Self {
            room: Some(claims.room),
            role: claims.role,
            name: claims.name,
            member: claims.member,
            unit: claims.unit,
            scope: Scope::Organisation,
        }
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The bearer secret of a request: the `Authorization` header, else
/// `?token=` when `query` is allowed.
fn presented(parts: &Parts, query: bool) -> Result<String, AuthError> {
    presented_where(parts, query).map(|(secret, _)| secret)
}

/// The secret and whether it came from the URL.
fn presented_where(parts: &Parts, query: bool) -> Result<(String, bool), AuthError> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let secret = bearer(value).map(str::to_owned).ok_or(AuthError::Invalid)?;
        return Ok((secret, false));
    }
    let from_query = query
        .then(|| Query::<TokenQuery>::try_from_uri(&parts.uri).ok())
        .flatten()
        .and_then(|Query(q)| q.token)
        .filter(|t| !t.is_empty());
    from_query.map(|t| (t, true)).ok_or(AuthError::Missing)
}

/// The credentials of `Authorization: Bearer <credentials>` (scheme is
/// case-insensitive, RFC 9110 §11.1).
fn bearer(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    let credentials = credentials.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty()).then_some(credentials)
}

/// Extractor: the caller holds an operator key — the root key
/// (organisation-wide) or a stored API key ([`crate::keys`]) — and `scope`
/// is how far it reaches. Handlers check the scope ([`crate::scope`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    pub scope: Scope,
}

/// The grant of a header credential: the root key or a room token
/// ([`Auth::grant`]), else a stored API key.
async fn header_grant(state: &AppState, presented: &str) -> Result<Grant, ApiError> {
    let now = unix_now();
    match state.auth.grant(presented, now) {
        Err(AuthError::Invalid) => {
            match crate::keys::resolve(&*state.keys, presented, now).await? {
                Some(scope) => Ok(Grant::operator_in(scope)),
                None => Err(AuthError::Invalid.into()),
            }
        }
        other => Ok(other?),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Operator
where
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let presented = presented(parts, false)?;
        match header_grant(&state, &presented).await? {
            Grant {
                room: None, scope, ..
            } => Ok(Operator { scope }),
            _ => Err(ApiError::Forbidden(
                "room tokens cannot manage rooms; use the operator key".to_owned(),
            )),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Grant
where
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let (presented, in_url) = presented_where(parts, true)?;
        if in_url {
            // Room tokens only: operator and API keys never travel in URLs.
            return Ok(state.auth.grant_from_url(&presented, unix_now())?);
        }
        header_grant(&state, &presented).await
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::*;

    const NOW: u64 = 1_700_000_000;
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn auth() -> Auth {
        Auth::new(SECRET, OperatorKey::new("sk_test"))
    }

    fn token(room: &str, role: Role, exp: u64) -> String {
        let claims = Claims {
            room: room.into(),
            role,
            name: None,
            member: None,
            unit: None,
            exp,
            iat: NOW,
        };
        auth().tokens().mint(&claims).unwrap()
    }

    fn parts(uri: &str, authorization: Option<&str>) -> Parts {
        let mut builder = Request::builder().uri(uri);
        if let Some(value) = authorization {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn operator_key_compares_exactly() {
        let key = OperatorKey::new("sk_abc");
        assert!(key.matches("sk_abc"));
        for other in ["", "sk_ab", "sk_abd", "sk_abcd", "SK_ABC"] {
            assert!(!key.matches(other), "{other}");
        }
    }

    #[test]
    fn operator_key_is_not_printed() {
        let debug = format!("{:?}", auth());
        assert!(!debug.contains("sk_test"), "{debug}");
    }

    #[test]
    fn operator_key_is_host_of_every_room() {
        let grant = auth().grant("sk_test", NOW).unwrap();
        assert_eq!(grant.role, Role::Host);
        assert!(grant.check_room("anyroom").is_ok());
    }

    #[test]
    fn operator_key_is_refused_in_urls() {
        assert_eq!(
            auth().grant_from_url("sk_test", NOW),
            Err(AuthError::Invalid)
        );
        let token = token("rooma", Role::Listener, NOW + 60);
        assert!(auth().grant_from_url(&token, NOW).is_ok());
    }

    #[test]
    fn token_grants_its_room_only() {
        let grant = auth()
            .grant(&token("rooma", Role::Speaker, NOW + 60), NOW)
            .unwrap();
        assert_eq!(grant.role, Role::Speaker);
        assert!(grant.check_room("rooma").is_ok());
        let err = grant.check_room("roomb").unwrap_err();
        assert_eq!(err.status(), 403);
    }

    #[test]
    fn expired_and_garbage_tokens() {
        let expired = token("rooma", Role::Host, NOW - 1);
        assert_eq!(auth().grant(&expired, NOW), Err(AuthError::Expired));
        assert_eq!(auth().grant("junk", NOW), Err(AuthError::Invalid));
    }

    #[test]
    fn bearer_header_and_query() {
        assert_eq!(
            presented(&parts("/", Some("Bearer abc")), true).unwrap(),
            "abc"
        );
        assert_eq!(
            presented(&parts("/", Some("bearer  abc ")), true).unwrap(),
            "abc"
        );
        assert_eq!(presented(&parts("/?token=q1", None), true).unwrap(), "q1");
        assert_eq!(
            presented(&parts("/?token=q1", None), false),
            Err(AuthError::Missing)
        );
        assert_eq!(presented(&parts("/", None), true), Err(AuthError::Missing));
        assert_eq!(
            presented(&parts("/?token=", None), true),
            Err(AuthError::Missing)
        );
        assert_eq!(
            presented(&parts("/", Some("Basic abc")), true),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            presented(&parts("/", Some("Bearer")), true),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn header_wins_over_query() {
        let p = parts("/?token=q1", Some("Bearer h1"));
        assert_eq!(presented(&p, true).unwrap(), "h1");
    }
}
