//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>):
//! `webhook-signature: v1,<base64 HMAC-SHA256 over "id.timestamp.body">`,
//! keyed with the secret's bytes. The secret is written `whsec_<base64>`,
//! the form receivers' libraries take as it is.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of a written secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Fewest key bytes accepted (the spec asks for 24 to 64).
pub const MIN_KEY_BYTES: usize = 24;

/// A signing key, parsed from `whsec_<base64>`.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(…)")
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "a webhook secret is `whsec_` followed by base64 of {MIN_KEY_BYTES} to 64 random bytes"
    )]
    Malformed,
}

impl SigningKey {
    /// Parses `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let b64 = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(KeyError::Malformed)?;
        let key = STANDARD.decode(b64).map_err(|_| KeyError::Malformed)?;
        if !(MIN_KEY_BYTES..=64).contains(&key.len()) {
            return Err(KeyError::Malformed);
        }
        Ok(Self(key))
    }

    /// `whsec_` + base64 of `key`.
    pub fn encode(key: &[u8]) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
    }

    /// The `webhook-signature` header value for one delivery.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries' tests.
    #[test]
    fn signs_like_the_standard_webhooks_reference() {
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            key.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    /// Checked by hand: `printf 'evt_1.1700000000.{}' | openssl dgst
    /// -sha256 -mac HMAC -macopt hexkey:0101…01 (32 bytes) -binary | base64`.
    #[test]
    fn signs_like_openssl() {
        let key = SigningKey::parse(&SigningKey::encode(&[1u8; 32])).unwrap();
        assert_eq!(key.sign("evt_1", 1_700_000_000, "{}"), OPENSSL);
    }
    const OPENSSL: &str = "v1,QwqMkShzqrc1Gme9vey76orVgdgb2XWjbuHPBS2IVKY=";

    #[test]
    fn malformed_secrets_are_refused() {
        for text in ["", "whsec_", "secret", "whsec_!!!", "whsec_AAAA"] {
            assert_eq!(
                SigningKey::parse(text).unwrap_err(),
                KeyError::Malformed,
                "{text}"
            );
        }
        assert!(
            !format!(
                "{:?}",
                SigningKey::parse(&SigningKey::encode(&[7; 32])).unwrap()
            )
            .contains('7')
        );
    }
}
