//! Key material made on first start and kept in the data directory.
//!
//! - `jwt.secret`: 32 random bytes, hex. Signs room tokens; replacing it
//!   invalidates every token already handed out, so it is never regenerated
//!   over an unreadable file — that is an error for a person to look at.
//! - `operator.key`: `sk_` + 32 hex characters (128 bits), unless the
//!   configuration supplies one. Printed once, on the start that creates it.
//!
//! Both are created with mode 0600 and `create_new`, so two processes
//! starting at once agree on one value (the loser reads the winner's file).
//! Nothing here logs a secret.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand::RngCore;
use sabha_signaling::OperatorKey;

use crate::webhooks::SigningKey;

pub const JWT_SECRET_FILE: &str = "jwt.secret";
pub const OPERATOR_KEY_FILE: &str = "operator.key";
/// The webhook signing secret, `whsec_<base64>` (Standard Webhooks form).
pub const WEBHOOK_SECRET_FILE: &str = "webhook.secret";
const JWT_SECRET_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not a hex secret of at least {JWT_SECRET_BYTES} bytes", path.display())]
    Corrupt { path: PathBuf },
    #[error("{}: {source}", path.display())]
    WebhookSecret {
        path: PathBuf,
        source: crate::webhooks::sign::KeyError,
    },
}

/// Where the operator key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Flag, environment or config file.
    Configured,
    /// `<data dir>/operator.key`, from an earlier start.
    Stored,
    /// Generated now and stored; the caller prints it once.
    Generated,
}

/// The JWT secret: read `<dir>/jwt.secret`, or create it.
pub fn jwt_secret(dir: &Path) -> Result<Vec<u8>, SecretError> {
    let path = dir.join(JWT_SECRET_FILE);
    let mut fresh = [0u8; JWT_SECRET_BYTES];
    rand::rng().fill_bytes(&mut fresh);
    let text = read_or_create(&path, &hex::encode(fresh))?;
    match hex::decode(text.trim()) {
        Ok(secret) if secret.len() >= JWT_SECRET_BYTES => Ok(secret),
        _ => Err(SecretError::Corrupt { path }),
    }
}

/// The webhook signing key: `configured`, else `<dir>/webhook.secret`,
/// created on first start (32 random bytes). Like `jwt.secret`, never
/// regenerated over a file that does not parse: receivers hold the secret.
pub fn webhook_key(dir: &Path, configured: Option<SigningKey>) -> Result<SigningKey, SecretError> {
    if let Some(key) = configured {
        return Ok(key);
    }
    let path = dir.join(WEBHOOK_SECRET_FILE);
    let mut fresh = [0u8; 32];
    rand::rng().fill_bytes(&mut fresh);
    let text = read_or_create(&path, &SigningKey::encode(&fresh))?;
    SigningKey::parse(&text).map_err(|source| SecretError::WebhookSecret { path, source })
}

/// The operator key: `configured`, else `<dir>/operator.key`, else a new one.
pub fn operator_key(
    dir: &Path,
    configured: Option<OperatorKey>,
) -> Result<(OperatorKey, KeyOrigin), SecretError> {
    if let Some(key) = configured {
        return Ok((key, KeyOrigin::Configured));
    }
    if let Some(key) = read_operator_key(dir)? {
        return Ok((OperatorKey::new(key), KeyOrigin::Stored));
    }
    let path = dir.join(OPERATOR_KEY_FILE);
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let fresh = format!("sk_{}", hex::encode(bytes));
    let stored = read_or_create(&path, &fresh)?;
    let origin = if stored.trim() == fresh {
        KeyOrigin::Generated
    } else {
        KeyOrigin::Stored
    };
    Ok((OperatorKey::new(stored.trim()), origin))
}

/// `<dir>/operator.key` if it exists and is not empty (the CLI's fallback).
pub fn read_operator_key(dir: &Path) -> Result<Option<String>, SecretError> {
    let path = dir.join(OPERATOR_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_owned())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SecretError::Io { path, source }),
    }
}

/// The file's contents; if it does not exist, writes `fresh` (0600) first.
fn read_or_create(path: &Path, fresh: &str) -> Result<String, SecretError> {
    let io_error = |source| SecretError::Io {
        path: path.to_owned(),
        source,
    };
    match create_private(path) {
        Ok(mut file) => {
            file.write_all(format!("{fresh}\n").as_bytes())
                .map_err(io_error)?;
            file.sync_all().map_err(io_error)?;
            Ok(fresh.to_owned())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            std::fs::read_to_string(path).map_err(io_error)
        }
        Err(e) => Err(io_error(e)),
    }
}

/// Creates a new file readable only by its owner.
fn create_private(path: &Path) -> io::Result<std::fs::File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh empty directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) fn temp_dir(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "sabha-test-{tag}-{}-{}",
            std::process::id(),
            sabha_signaling::ids::room_id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    #[test]
    fn jwt_secret_is_created_once() {
        let dir = temp_dir("jwt");
        let first = jwt_secret(&dir).unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(jwt_secret(&dir).unwrap(), first);
        let text = std::fs::read_to_string(dir.join(JWT_SECRET_FILE)).unwrap();
        assert_eq!(text.trim().len(), 64);
    }

    #[cfg(unix)]
    #[test]
    fn secret_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("mode");
        jwt_secret(&dir).unwrap();
        operator_key(&dir, None).unwrap();
        for file in [JWT_SECRET_FILE, OPERATOR_KEY_FILE] {
            let mode = std::fs::metadata(dir.join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }

    #[test]
    fn corrupt_jwt_secret_is_an_error() {
        let dir = temp_dir("corrupt");
        std::fs::write(dir.join(JWT_SECRET_FILE), "not hex\n").unwrap();
        assert!(matches!(jwt_secret(&dir), Err(SecretError::Corrupt { .. })));
        std::fs::write(dir.join(JWT_SECRET_FILE), "abcd\n").unwrap();
        assert!(matches!(jwt_secret(&dir), Err(SecretError::Corrupt { .. })));
    }

    #[test]
    fn operator_key_generated_then_stored() {
        let dir = temp_dir("opkey");
        let (key, origin) = operator_key(&dir, None).unwrap();
        assert_eq!(origin, KeyOrigin::Generated);
        assert!(key.expose().starts_with("sk_") && key.expose().len() == 35);
        let (again, origin) = operator_key(&dir, None).unwrap();
        assert_eq!((again.expose(), origin), (key.expose(), KeyOrigin::Stored));
        assert_eq!(
            read_operator_key(&dir).unwrap().as_deref(),
            Some(key.expose())
        );
    }

    #[test]
    fn configured_operator_key_wins_and_is_not_stored() {
        let dir = temp_dir("configured");
        let (key, origin) = operator_key(&dir, Some(OperatorKey::new("sk_mine"))).unwrap();
        assert_eq!((key.expose(), origin), ("sk_mine", KeyOrigin::Configured));
        assert_eq!(read_operator_key(&dir).unwrap(), None);
    }

    #[test]
    fn webhook_secret_is_created_once_and_corruption_is_an_error() {
        let dir = temp_dir("webhook");
        let first = webhook_key(&dir, None).unwrap();
        let again = webhook_key(&dir, None).unwrap();
        assert_eq!(first.sign("evt", 1, "{}"), again.sign("evt", 1, "{}"));
        let text = std::fs::read_to_string(dir.join(WEBHOOK_SECRET_FILE)).unwrap();
        assert!(text.starts_with("whsec_"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(dir.join(WEBHOOK_SECRET_FILE)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
        let configured = SigningKey::parse(&SigningKey::encode(&[9; 32])).unwrap();
        let chosen = webhook_key(&dir, Some(configured.clone())).unwrap();
        assert_eq!(chosen.sign("e", 1, ""), configured.sign("e", 1, ""));
        std::fs::write(dir.join(WEBHOOK_SECRET_FILE), "garbage\n").unwrap();
        assert!(matches!(
            webhook_key(&dir, None),
            Err(SecretError::WebhookSecret { .. })
        ));
    }
}
