//! `url_previews.allow`: which URLs a preview may fetch. Matching is on the parsed URL (scheme,
//! host, port, path), never on the string, so `https://a.example.evil.test` does not pass as
//! `https://a.example`.

use reqwest::Url;

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// `host` or `host:port`: http and https on that host, any path; without a port, only the
    /// scheme's default port.
    Host { host: String, port: Option<u16> },
    /// `scheme://host[:port]/path`: that scheme, host and port, and paths under `path`.
    Prefix { scheme: String, host: String, port: Option<u16>, path: String },
}

/// The parsed `url_previews.allow`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    rules: Vec<Rule>,
}

impl AllowList {
    /// Parses the entries; a bad entry is named in the error.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let rules = entries.iter().map(|e| rule(e.trim())).collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    /// Whether `url` may be fetched.
    pub fn permits(&self, url: &Url) -> bool {
        if !matches!(url.scheme(), "http" | "https") || !url.username().is_empty() || url.password().is_some() {
            return false;
        }
        let Some(host) = url.host_str() else { return false };
        let port = url.port_or_known_default();
        self.rules.iter().any(|rule| match rule {
            // `Url::port` is `None` for the scheme's default port.
            Rule::Host { host: h, port: p } => h == host && p.map_or(url.port().is_none(), |p| port == Some(p)),
            Rule::Prefix { scheme, host: h, port: p, path } => {
                scheme == url.scheme()
                    && h == host
                    && port == *p
                    && (url.path() == path
                        || path.ends_with('/') && url.path().starts_with(path.as_str())
                        || url.path().strip_prefix(path.as_str()).is_some_and(|rest| rest.starts_with('/')))
            }
        })
    }
}

fn rule(entry: &str) -> Result<Rule, String> {
    let bad = |why: &str| {
        format!(
            "`{entry}` {why}: use a host (`www.dwd.de`, `10.0.0.5:8080`) or a URL prefix (`https://warnung.bund.de/meldungen/`)"
        )
    };
    if entry.contains("://") {
        let url = Url::parse(entry).map_err(|e| bad(&format!("is not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("is neither http nor https"));
        }
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
            return Err(bad("has a user, query or fragment"));
        }
        let host = url.host_str().ok_or_else(|| bad("has no host"))?.to_owned();
        Ok(Rule::Prefix {
            scheme: url.scheme().to_owned(),
            host,
            port: url.port_or_known_default(),
            path: url.path().to_owned(),
        })
    } else {
        let url = Url::parse(&format!("http://{entry}/")).map_err(|e| bad(&format!("is not a host ({e})")))?;
        if url.path() != "/" || !url.username().is_empty() || url.query().is_some() {
            return Err(bad("is not a bare host"));
        }
        let host = url.host_str().ok_or_else(|| bad("has no host"))?.to_owned();
        Ok(Rule::Host { host, port: url.port() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(&entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    fn permits(list: &AllowList, url: &str) -> bool {
        list.permits(&Url::parse(url).unwrap())
    }

    #[test]
    fn hosts_match_the_host_on_default_ports_only() {
        let l = list(&["www.dwd.de", "Lab.Example:8080"]);
        assert!(permits(&l, "https://www.dwd.de/warnungen"));
        assert!(permits(&l, "http://www.dwd.de/"));
        assert!(!permits(&l, "https://www.dwd.de:8443/"), "another port must be named");
        assert!(!permits(&l, "https://www.dwd.de.evil.test/"));
        assert!(!permits(&l, "https://evil.test/?www.dwd.de"));
        assert!(!permits(&l, "https://user@www.dwd.de/"), "no credentials in previewed URLs");
        assert!(!permits(&l, "ftp://www.dwd.de/"));
        assert!(permits(&l, "http://lab.example:8080/x"));
        assert!(!permits(&l, "http://lab.example/x"));
    }

    #[test]
    fn prefixes_match_scheme_host_port_and_whole_path_segments() {
        let l = list(&["https://warnung.bund.de/meldungen", "http://127.0.0.1:9000/pages/"]);
        assert!(permits(&l, "https://warnung.bund.de/meldungen"));
        assert!(permits(&l, "https://warnung.bund.de/meldungen/123?x=1"));
        assert!(!permits(&l, "https://warnung.bund.de/meldungenxyz"));
        assert!(!permits(&l, "http://warnung.bund.de/meldungen/1"), "scheme");
        assert!(!permits(&l, "https://warnung.bund.de/other"));
        assert!(!permits(&l, "https://warnung.bund.de/meldungen/../other"), "dot segments are resolved first");
        assert!(permits(&l, "http://127.0.0.1:9000/pages/a.html"));
        assert!(!permits(&l, "http://127.0.0.1:9001/pages/a.html"));
        assert!(!permits(&l, "http://127.0.0.1:9000/elsewhere"));
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in ["ftp://x.example/", "https://x.example/?q=1", "x.example/path", "https://u:p@x.example/", "http://"]
        {
            let err = AllowList::parse(&[bad.to_owned()]).expect_err(bad);
            assert!(err.contains(bad), "{err}");
        }
        assert!(!AllowList::default().permits(&Url::parse("https://x.example/").unwrap()));
    }
}
