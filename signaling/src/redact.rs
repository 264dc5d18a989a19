//! Wrappers that make log lines safe to keep: a client IP is shown as its
//! network (`/24` for IPv4, `/48` for IPv6), enough to see that one NAT or
//! one network is misbehaving without recording who the listener is; a
//! token is shown by its last four characters only, enough to match two
//! log lines about the same token without being able to replay it.
//!
//! Use them at every log site that mentions a client address or a bearer
//! credential: `tracing::warn!(ip = %ClientIp(ip), …)`. `Debug` and
//! `Display` print the same redacted form, so `?` cannot leak either.

use std::fmt;
use std::net::IpAddr;

/// A client IP, shown as its network.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl fmt::Display for ClientIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                write!(f, "{a}.{b}.{c}.0/24")
            }
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientIp(IpAddr::V4(v4)).fmt(f),
                None => {
                    let s = v6.segments();
                    write!(f, "{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
                }
            },
        }
    }
}

impl fmt::Debug for ClientIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A bearer token (room JWT, API key, invite token), shown as `tok:…` and
/// its last four characters (none at all if it is shorter than 16, so a
/// short secret is never half shown).
#[derive(Clone, Copy)]
pub struct Token<'a>(pub &'a str);

impl fmt::Display for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chars: Vec<char> = self.0.chars().collect();
        if chars.len() < 16 {
            return f.write_str("tok:…");
        }
        let tail: String = chars[chars.len() - 4..].iter().collect();
        write!(f, "tok:…{tail}")
    }
}

impl fmt::Debug for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_address_is_shown_as_its_slash_24() {
        let ip: IpAddr = "203.0.113.77".parse().unwrap();
        assert_eq!(ClientIp(ip).to_string(), "203.0.113.0/24");
        assert_eq!(format!("{:?}", ClientIp(ip)), "203.0.113.0/24");
        let mapped: IpAddr = "::ffff:203.0.113.77".parse().unwrap();
        assert_eq!(ClientIp(mapped).to_string(), "203.0.113.0/24");
    }

    #[test]
    fn an_ipv6_address_is_shown_as_its_slash_48() {
        let ip: IpAddr = "2001:db8:abcd:12:3456::1".parse().unwrap();
        let shown = ClientIp(ip).to_string();
        assert_eq!(shown, "2001:db8:abcd::/48");
        assert!(!shown.contains("3456"));
    }

    #[test]
    fn a_token_is_shown_by_its_last_four_characters_only() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJyb29tIjoiYSJ9.c2lnbmF0dXJlWYZ1";
        assert_eq!(Token(jwt).to_string(), "tok:…WYZ1");
        assert_eq!(format!("{:?}", Token(jwt)), "tok:…WYZ1");
        assert!(!Token(jwt).to_string().contains("eyJ"));
        assert_eq!(Token("short-secret").to_string(), "tok:…");
    }
}
