//! What request data may reach a log line. Clients may put their access token in the query
//! (`?access_token=`, deprecated but still sent), and a few endpoints take other secrets there,
//! so a URI is only ever logged through [`redacted_uri`].

/// Query parameters whose values are secrets. `url` is the link a URL preview asks about: links
/// shared in rooms carry tokens of their own (signed downloads, invitations).
const SECRET_PARAMS: &[&str] =
    &["access_token", "token", "login_token", "refresh_token", "password", "client_secret", "sid", "url"];

/// The URI's path and query, with the value of every secret query parameter replaced by
/// `<redacted>`. Parameter names are compared case-blind after percent-decoding, so
/// `Access%5Ftoken` is caught too.
pub fn redacted_uri(uri: &http::Uri) -> String {
    let path = uri.path();
    let Some(query) = uri.query() else { return path.to_owned() };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| {
            let (name, has_value) = match pair.split_once('=') {
                Some((name, _)) => (name, true),
                None => (pair, false),
            };
            if has_value && is_secret(name) { format!("{name}=<redacted>") } else { pair.to_owned() }
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

fn is_secret(name: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy().to_ascii_lowercase();
    SECRET_PARAMS.contains(&decoded.as_str())
}

#[cfg(test)]
mod tests {
    use super::redacted_uri;

    fn r(s: &str) -> String {
        redacted_uri(&s.parse().unwrap())
    }

    #[test]
    fn secrets_are_redacted_and_the_rest_kept() {
        assert_eq!(r("/a/b?access_token=SECRET&limit=5"), "/a/b?access_token=<redacted>&limit=5");
        assert_eq!(r("/a?x=1&Access_Token=SECRET"), "/a?x=1&Access_Token=<redacted>");
        assert_eq!(r("/a?access%5Ftoken=SECRET"), "/a?access%5Ftoken=<redacted>");
        assert_eq!(r("/a?password=hunter2&token=t"), "/a?password=<redacted>&token=<redacted>");
        assert_eq!(r("/preview_url?url=https%3A%2F%2Fx%2F%3Ftoken%3Ds"), "/preview_url?url=<redacted>");
        assert_eq!(r("/a"), "/a");
        assert_eq!(r("/a?flag"), "/a?flag");
        assert_eq!(r("/a?bad=%zz&%"), "/a?bad=%zz&%");
    }
}
