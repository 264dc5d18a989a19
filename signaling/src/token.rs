//! Room tokens: HS256 JWTs that grant one role in one room until they expire.
//!
//! The server both mints and verifies, so a shared secret (HMAC-SHA256) is
//! enough; asymmetric keys would only matter if another service minted. The
//! verifier accepts HS256 and nothing else, so `alg: none` and algorithm
//! confusion are rejected before any claim is read.
//!
//! Time is passed in (`now`, Unix seconds) rather than read here, so expiry is
//! checked against the caller's clock and tests are exact: the library's own
//! clock-based `exp` check is turned off and [`TokenKeys::verify`] does it.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::backend::Role;

/// What a room token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The only room this token opens.
    pub room: String,
    pub role: Role,
    /// Display name, passed to the media side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The organisation's member id, for tokens issued to a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// The unit the holder belongs to (a booth, say), for reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Expiry, Unix seconds. Required.
    pub exp: u64,
    /// Issue time, Unix seconds.
    pub iat: u64,
}

/// Why a token was not accepted. Deliberately coarse: a client learns that
/// its token is bad or old, not which check failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is invalid")]
    Invalid,
    /// Signing failed; with an HMAC key this means a bug.
    #[error("could not sign the token: {0}")]
    Signing(String),
}

/// The signing and verifying keys, made once from the server secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(<redacted>)")
    }
}

impl TokenKeys {
    /// Keys from the server's HMAC secret (32 random bytes in production).
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false; // checked in `verify` against `now`
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Signs `claims` as an HS256 JWT.
    pub fn mint(&self, claims: &Claims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))
    }

    /// Checks signature, algorithm and expiry; returns the claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| TokenError::Invalid)?;
        if data.claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn keys() -> TokenKeys {
        TokenKeys::new(b"0123456789abcdef0123456789abcdef")
    }

    fn claims(room: &str, exp: u64) -> Claims {
        Claims {
            room: room.into(),
            role: Role::Listener,
            name: Some("Asha".into()),
            member: None,
            unit: None,
            exp,
            iat: NOW,
        }
    }

    fn b64(bytes: &[u8]) -> String {
        // URL-safe base64 without padding, enough for hand-made test tokens.
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
            }
        }
        out
    }

    #[test]
    fn valid_token_round_trips() {
        let k = keys();
        let token = k.mint(&claims("room1", NOW + 60)).unwrap();
        assert_eq!(k.verify(&token, NOW).unwrap(), claims("room1", NOW + 60));
    }

    #[test]
    fn name_is_optional() {
        let k = keys();
        let c = Claims {
            name: None,
            member: None,
            unit: None,
            ..claims("room1", NOW + 60)
        };
        let token = k.mint(&c).unwrap();
        assert_eq!(k.verify(&token, NOW).unwrap().name, None);
    }

    #[test]
    fn expired_token_is_rejected() {
        let k = keys();
        let token = k.mint(&claims("room1", NOW)).unwrap();
        assert_eq!(k.verify(&token, NOW), Err(TokenError::Expired));
        assert_eq!(k.verify(&token, NOW + 3600), Err(TokenError::Expired));
    }

    #[test]
    fn tampered_signature_is_rejected() {
        let k = keys();
        let token = k.mint(&claims("room1", NOW + 60)).unwrap();
        let mut bytes = token.into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(k.verify(&tampered, NOW), Err(TokenError::Invalid));
    }

    #[test]
    fn tampered_claims_are_rejected() {
        let k = keys();
        let token = k.mint(&claims("room1", NOW + 60)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let forged = serde_json::to_vec(&claims("room2", NOW + 60)).unwrap();
        let forged = format!("{}.{}.{}", parts[0], b64(&forged), parts[2]);
        assert_eq!(k.verify(&forged, NOW), Err(TokenError::Invalid));
    }

    #[test]
    fn other_secret_is_rejected() {
        let token = TokenKeys::new(b"another secret")
            .mint(&claims("room1", NOW + 60))
            .unwrap();
        assert_eq!(keys().verify(&token, NOW), Err(TokenError::Invalid));
    }

    #[test]
    fn alg_none_is_rejected() {
        let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64(&serde_json::to_vec(&claims("room1", NOW + 60)).unwrap());
        for token in [format!("{header}.{body}."), format!("{header}.{body}")] {
            assert_eq!(
                keys().verify(&token, NOW),
                Err(TokenError::Invalid),
                "{token}"
            );
        }
    }

    #[test]
    fn other_algorithm_is_rejected() {
        let k = keys();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims("room1", NOW + 60),
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert_eq!(k.verify(&token, NOW), Err(TokenError::Invalid));
    }

    #[test]
    fn the_token_names_its_room() {
        // Room checks are the caller's (auth.rs); the claim must survive intact.
        let k = keys();
        let token = k.mint(&claims("room-a", NOW + 60)).unwrap();
        assert_eq!(k.verify(&token, NOW).unwrap().room, "room-a");
    }

    #[test]
    fn missing_exp_is_rejected() {
        let k = keys();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({ "room": "room1", "role": "host", "iat": NOW }),
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert_eq!(k.verify(&token, NOW), Err(TokenError::Invalid));
    }

    #[test]
    fn unknown_role_is_rejected() {
        let k = keys();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({ "room": "r", "role": "admin", "iat": NOW, "exp": NOW + 60 }),
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert_eq!(k.verify(&token, NOW), Err(TokenError::Invalid));
    }

    #[test]
    fn garbage_is_rejected() {
        let k = keys();
        for token in ["", "garbage", "a.b.c", "...", "sk_0123", "\u{0}\u{1}.x.y"] {
            assert_eq!(k.verify(token, NOW), Err(TokenError::Invalid), "{token:?}");
        }
    }
}
