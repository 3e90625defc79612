//! Grammar checks for Matrix server names, localparts, aliases and policy identifiers.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Checks a Matrix server name: `hostname [":" port]`, where hostname is an IPv4 address, an
/// IPv6 address in brackets, or a DNS name (labels of letters, digits and hyphens, not starting
/// or ending with a hyphen, at most 63 characters each and 255 in all). The port is 1-65535.
///
/// Returns a human-readable reason on failure.
pub fn check_server_name(s: &str) -> Result<(), String> {
    let (host, port) = split_host_port(s)?;
    if let Some(port) = port {
        check_port(port)?;
    }
    check_host(host)
}

/// Checks a pinned address: like a server name, but the port is required.
pub fn check_address(s: &str) -> Result<(), String> {
    let (host, port) = split_host_port(s)?;
    match port {
        Some(port) => check_port(port)?,
        None => return Err("a port is required (host:port)".to_string()),
    }
    check_host(host)
}

fn split_host_port(s: &str) -> Result<(&str, Option<&str>), String> {
    if s.is_empty() {
        return Err("is empty".to_string());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return Err("IPv6 literal is missing its closing \"]\"".to_string());
        };
        let (inner, after) = rest.split_at(end);
        let after = &after[1..];
        let host_len = inner.len() + 2;
        let host = &s[..host_len];
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(format!("unexpected {after:?} after the IPv6 literal")),
            },
        };
    }
    match s.rsplit_once(':') {
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((s, None)),
    }
}

fn check_port(port: &str) -> Result<(), String> {
    let ok = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    match port.parse::<u32>() {
        Ok(n) if ok && (1..=65535).contains(&n) => Ok(()),
        _ => Err(format!("port {port:?} is not a number from 1 to 65535")),
    }
}

fn check_host(host: &str) -> Result<(), String> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().map(|_| ()).map_err(|_| format!("{inner:?} is not a valid IPv6 address"));
    }
    if host.is_empty() {
        return Err("host name is empty".to_string());
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return host.parse::<Ipv4Addr>().map(|_| ()).map_err(|_| format!("{host:?} is not a valid IPv4 address"));
    }
    if host.len() > 255 {
        return Err("host name is longer than 255 characters".to_string());
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    for label in host.split('.') {
        if label.is_empty() {
            return Err("host name has an empty label".to_string());
        }
        if label.len() > 63 {
            return Err(format!("host name label {label:?} is longer than 63 characters"));
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("host name label {label:?} may only contain letters, digits and \"-\""));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("host name label {label:?} may not start or end with \"-\""));
        }
    }
    Ok(())
}

/// Checks a user localpart as Matrix requires for new accounts: `a-z 0-9 . _ = - / +`.
pub fn check_localpart(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".to_string());
    }
    if s.len() > 200 {
        return Err("is longer than 200 characters".to_string());
    }
    match s.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+')) {
        Some(c) => Err(format!("{s:?} contains {c:?}; a localpart may only contain a-z, 0-9 and . _ = - / +")),
        None => Ok(()),
    }
}

/// Checks a room alias localpart (the part between `#` and `:`). Tocsin keeps these to
/// `a-z 0-9 . _ = -` so they are easy to type and safe in file names.
pub fn check_alias(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".to_string());
    }
    if s.starts_with('#') || s.contains(':') {
        return Err(format!("give only the alias localpart (e.g. \"crisis\"), not {s:?}"));
    }
    if s.len() > 200 {
        return Err("is longer than 200 characters".to_string());
    }
    match s.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-')) {
        Some(c) => Err(format!("{s:?} contains {c:?}; an alias may only contain a-z, 0-9 and . _ = -")),
        None => Ok(()),
    }
}

/// Checks a role name: `a-z 0-9 _ -`, starting with a letter.
pub fn check_identifier(s: &str) -> Result<(), String> {
    let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = s.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'));
    if first_ok && rest_ok && s.len() <= 64 {
        Ok(())
    } else {
        Err(format!("{s:?} is not a valid name; use a-z, 0-9, \"_\" and \"-\", starting with a letter (at most 64)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        for ok in [
            "riverton:8448",
            "county-fire:8450",
            "matrix.example.org",
            "example.org.",
            "1.2.3.4",
            "1.2.3.4:8448",
            "[::1]",
            "[2001:db8::1]:8448",
            "localhost",
        ] {
            assert_eq!(check_server_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "riverton:",
            "riverton:0",
            "riverton:65536",
            "riverton:84a8",
            "-bad.org",
            "bad-.org",
            "a..b",
            "under_score.org",
            "1.2.3.256",
            "[::1",
            "[::1]x",
            "[zz::1]",
            "::1",
            "a b",
            "ümlaut.de",
        ] {
            assert!(check_server_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_need_a_port() {
        assert_eq!(check_address("127.0.0.1:8448"), Ok(()));
        assert_eq!(check_address("[::1]:8448"), Ok(()));
        assert!(check_address("127.0.0.1").is_err());
    }

    #[test]
    fn localparts_and_aliases() {
        assert_eq!(check_localpart("fire.chief"), Ok(()));
        assert!(check_localpart("Mayor").is_err());
        assert!(check_localpart("").is_err());
        assert_eq!(check_alias("crisis-room"), Ok(()));
        assert!(check_alias("#crisis:riverton").is_err());
        assert!(check_alias("crisis room").is_err());
        assert_eq!(check_identifier("fire_chief"), Ok(()));
        assert!(check_identifier("1st").is_err());
    }
}
