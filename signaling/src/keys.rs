//! Operator API keys: many operators, each limited to a unit's subtree.
//!
//! The root operator key (`operator.key`) stays the organisation-wide key
//! that needs no database. Beside it, an organisation-wide operator creates
//! named API keys, each optionally scoped to a unit ([`Scope`]). A key reads
//! `sk_<id>_<secret>`: the 12-character id is public (it names the key in
//! `GET /v1/keys` and `DELETE /v1/keys/{id}`), the 64 hex characters of the
//! secret are 256 random bits, shown once on creation and never stored —
//! the store keeps their SHA-256. A plain hash is right for secrets this
//! strong: there is nothing to brute-force, and a slow KDF would only slow
//! every request.
//!
//! A presented key is looked up by id, then its hash compared in constant
//! time; an unknown id is compared against a dummy hash, so the answer's
//! timing tells no more than whether the id exists. Unknown, wrong and
//! revoked keys all get the same 401. Revocation is a column read on every
//! request, so it takes effect at once.
//!
//! Only organisation-wide operators manage keys: a scoped key cannot create,
//! list or revoke keys (403). A district office asks the state office for
//! its mandals' keys; that keeps the set of credentials in one hand.

use async_trait::async_trait;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::auth::{AuthError, Operator};
use crate::backend::StoreError;
use crate::ids;
use crate::problem::ApiError;
use crate::rooms::checked_name;
use crate::scope::{Scope, require_organisation};
use crate::timestamp::{rfc3339, unix_now};

/// Prefix of every API key (and of the root key: `sk_` + 32 hex, which has
/// no second `_` and so never parses as an API key).
pub const PREFIX: &str = "sk_";
/// Random bytes in a key's secret.
pub const SECRET_BYTES: usize = 32;
/// Longest key name, in characters.
pub const MAX_KEY_NAME: usize = 100;
/// `last_used_at` is written at most this often per key (seconds), so a
/// busy key does not turn every request into a database write.
pub const TOUCH_EVERY_S: u64 = 60;

/// A stored key, as listed: never its secret or its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    /// `None`: the whole organisation.
    pub unit: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    pub revoked_at: Option<u64>,
    pub last_used_at: Option<u64>,
}

/// A key to store: the hash of its secret, not the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewKey {
    pub id: String,
    pub name: String,
    pub unit: Option<String>,
    /// Lowercase hex SHA-256 of the secret part.
    pub secret_hash: String,
    pub created_at: u64,
}

/// What authentication needs of a stored key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyCredential {
    pub unit: Option<String>,
    pub secret_hash: String,
    pub revoked: bool,
    pub last_used_at: Option<u64>,
}

/// Where API keys live (the binary's database; memory in tests).
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    async fn create_key(&self, key: NewKey) -> Result<ApiKey, StoreError>;
    /// Every key, revoked ones too, oldest first.
    async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError>;
    /// Marks the key revoked at `at`. `Ok(false)` when there is no such key
    /// or it was already revoked.
    async fn revoke_key(&self, id: &str, at: u64) -> Result<bool, StoreError>;
    /// The key `id` for checking a presented secret.
    async fn key_credential(&self, id: &str) -> Result<Option<KeyCredential>, StoreError>;
    /// Records that the key was used at `at`.
    async fn touch_key(&self, id: &str, at: u64) -> Result<(), StoreError>;
}

/// `sk_<id>_<secret>` split into id and secret, if it has that shape.
pub fn parse(presented: &str) -> Option<(&str, &str)> {
    let (id, secret) = presented.strip_prefix(PREFIX)?.split_once('_')?;
    let secret_ok =
        secret.len() == 2 * SECRET_BYTES && secret.bytes().all(|b| b.is_ascii_hexdigit());
    (ids::is_room_id(id) && secret_ok).then_some((id, secret))
}

/// Lowercase hex SHA-256 of `secret`.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Equal in time independent of where `a` and `b` differ.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Hash compared against when the id is unknown, so that path costs the
/// same hashing and comparing as a known one.
const DUMMY_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The scope of `presented` when it is a live API key; `Ok(None)` when it
/// does not have the shape of one (try other credentials); 401 when it has
/// the shape but is unknown, wrong or revoked.
pub async fn resolve(
    store: &dyn KeyStore,
    presented: &str,
    now: u64,
) -> Result<Option<Scope>, ApiError> {
    let Some((id, secret)) = parse(presented) else {
        return Ok(None);
    };
    let stored = store.key_credential(id).await?;
    let hash = hash_secret(secret);
    let expected = stored
        .as_ref()
        .map_or(DUMMY_HASH, |k| k.secret_hash.as_str());
    let matches = same(&hash, expected);
    let Some(key) = stored.filter(|k| matches && !k.revoked) else {
        return Err(AuthError::Invalid.into());
    };
    if key
        .last_used_at
        .is_none_or(|t| now.saturating_sub(t) >= TOUCH_EVERY_S)
        && let Err(error) = store.touch_key(id, now).await
    {
        // Bookkeeping only: the request goes on.
        tracing::warn!(key = %id, %error, "could not record the key's use");
    }
    Ok(Some(Scope::from_unit(key.unit)))
}

/// A fresh key: its full secret text (shown once) and what to store.
pub fn generate(name: String, unit: Option<String>, now: u64) -> (String, NewKey) {
    let id = ids::room_id();
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    let full = format!("{PREFIX}{id}_{secret}");
    let key = NewKey {
        id,
        name,
        unit,
        secret_hash: hash_secret(&secret),
        created_at: now,
    };
    (full, key)
}

/// `POST /v1/keys` body.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    pub name: String,
    #[serde(default)]
    pub unit: Option<String>,
}

/// A key as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub unit: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

impl From<ApiKey> for KeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            name: k.name,
            unit: k.unit,
            created_at: rfc3339(k.created_at),
            revoked_at: k.revoked_at.map(rfc3339),
            last_used_at: k.last_used_at.map(rfc3339),
        }
    }
}

/// `POST /v1/keys` answer: the key and, this once, its secret.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: KeyView,
    /// `sk_<id>_<secret>`: the bearer credential. Not retrievable later.
    pub secret: String,
}

/// `POST /v1/keys`
#[utoipa::path(
    post,
    path = "/v1/keys",
    tag = "operators",
    summary = "Create an operator API key (org-wide operators)",
    security(("bearer" = [])),
    request_body(content = KeyRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The key and, once, its secret; Location: /v1/keys/{id}", body = CreatedKey),
        (status = 400, description = "malformed request", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "wrong Content-Type", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    operator: Operator,
    crate::extract::JsonBody(request): crate::extract::JsonBody<KeyRequest>,
) -> Result<Response, ApiError> {
    require_organisation(&operator.scope, "managing API keys")?;
    let name = checked_name(&request.name, MAX_KEY_NAME, "key name")?;
    if let Some(unit) = &request.unit
        && state.org.ancestry(unit).await?.is_empty()
    {
        return Err(ApiError::Unprocessable(format!(
            "no unit {unit:?} in the organisation (PUT /v1/org first)"
        )));
    }
    let (secret, key) = generate(name, request.unit, unix_now());
    let key = state.keys.create_key(key).await?;
    tracing::info!(key = %key.id, unit = ?key.unit, "API key created");
    let location = HeaderValue::try_from(format!("/v1/keys/{}", key.id))
        .map_err(|_| ApiError::Internal(format!("key id {:?} is not a header", key.id)))?;
    let body = CreatedKey {
        key: key.into(),
        secret,
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

/// `GET /v1/keys`
#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "operators",
    summary = "List API keys (no secrets)",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Keys", body = [KeyView]),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    operator: Operator,
) -> Result<Json<Vec<KeyView>>, ApiError> {
    require_organisation(&operator.scope, "managing API keys")?;
    let keys = state.keys.list_keys().await?;
    Ok(Json(keys.into_iter().map(KeyView::from).collect()))
}

/// `DELETE /v1/keys/{id}`: revokes; the key stops working at once.
#[utoipa::path(
    delete,
    path = "/v1/keys/{id}",
    tag = "operators",
    summary = "Revoke an API key",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "no or bad credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for these credentials", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "storage or media unavailable, or full", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_organisation(&operator.scope, "managing API keys")?;
    if !ids::is_room_id(&id) || !state.keys.revoke_key(&id, unix_now()).await? {
        return Err(ApiError::NotFound("key"));
    }
    tracing::info!(key = %id, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_hash() {
        let (full, key) = generate("Dist 1".into(), Some("d1".into()), 5);
        let (id, secret) = parse(&full).expect("own format");
        assert_eq!(id, key.id);
        assert_eq!(hash_secret(secret), key.secret_hash);
        assert!(!key.secret_hash.contains(secret));
        assert_eq!(key.secret_hash.len(), 64);
    }

    #[test]
    fn other_shapes_are_not_api_keys() {
        let secret = "a".repeat(64);
        for bad in [
            String::new(),
            "sk_0123456789abcdef0123456789abcdef".to_owned(), // a root key
            format!("sk_short_{secret}"),
            format!("sk_abcdefghijkl_{}", "g".repeat(64)),
            format!("sk_abcdefghijkl_{}", "a".repeat(63)),
            format!("pk_abcdefghijkl_{secret}"),
            "eyJ.a.b".to_owned(),
        ] {
            assert_eq!(parse(&bad), None, "{bad}");
        }
        assert!(parse(&format!("sk_abcdefghijkl_{secret}")).is_some());
    }

    #[test]
    fn comparison_is_exact() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
