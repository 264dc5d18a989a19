//! Room ids: short, URL-safe, random.
//!
//! Ids appear in URLs people type and paste (`/v1/rooms/k3v9x0q2m7ab/whep`),
//! so they are lowercase letters and digits only. 12 characters of 36 give
//! about 62 bits: collisions are not a practical concern, and a store that
//! hits one anyway retries with a new id. Room ids are not secrets — tokens
//! guard the rooms — so a thread-local generator is fine.

use rand::Rng;

/// Length of a room id.
pub const ROOM_ID_LEN: usize = 12;

const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A fresh random room id.
pub fn room_id() -> String {
    let mut rng = rand::rng();
    (0..ROOM_ID_LEN)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// Whether `id` has the shape of a room id. Handlers answer 404 for anything
/// else without asking the store.
pub fn is_room_id(id: &str) -> bool {
    id.len() == ROOM_ID_LEN && id.bytes().all(|b| ALPHABET.contains(&b))
}

/// Digits in a room code: typed on a phone keypad, so short, but with
/// 10⁸ codes a guess is hopeless under the PIN-join rate limits.
pub const ROOM_CODE_LEN: usize = 8;

/// A fresh random room code (digits only; may start with 0).
pub fn room_code() -> String {
    let mut rng = rand::rng();
    (0..ROOM_CODE_LEN)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

/// Whether `code` has the shape of a room code.
pub fn is_room_code(code: &str) -> bool {
    code.len() == ROOM_CODE_LEN && code.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `id` could be a session id: short and URL-safe. The media driver
/// owns the format; this only keeps junk away from it.
pub fn is_session_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_have_the_documented_shape() {
        for _ in 0..100 {
            let id = room_id();
            assert!(is_room_id(&id), "{id}");
        }
    }

    #[test]
    fn room_codes_are_digits() {
        for _ in 0..100 {
            let code = room_code();
            assert!(is_room_code(&code), "{code}");
        }
        assert!(!is_room_code("1234567"));
        assert!(!is_room_code("1234567a"));
    }

    #[test]
    fn room_ids_differ() {
        assert_ne!(room_id(), room_id());
    }

    #[test]
    fn junk_is_not_a_room_id() {
        for id in ["", "short", "ABCDEFGHIJKL", "abcdefghijk!", "abcdefghijklm"] {
            assert!(!is_room_id(id), "{id}");
        }
    }

    #[test]
    fn session_ids() {
        assert!(is_session_id("s_0123-abc"));
        assert!(!is_session_id(""));
        assert!(!is_session_id("a/b"));
        assert!(!is_session_id(&"a".repeat(129)));
    }
}
