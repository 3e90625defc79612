//! Config parsing: defaults, file, environment and bad values.

use super::*;

#[test]
fn the_shipped_example_config_parses() {
    let text = include_str!("../../../deploy/node.toml");
    let config = Config::from_toml(text).expect("deploy/node.toml is valid");
    assert_eq!(config.server_name, "riverton.example:8448");
    assert_eq!(config.registration, Registration::Closed);
    config.validate().expect("and passes validation");
}

#[test]
fn environment_overrides_file_and_defaults() {
    let mut config = Config::from_toml("server_name = \"a.example\"\nstore = \"sled\"").unwrap();
    let env = |k: &str| match k {
        "TOCSIN_SERVER_NAME" => Some("b.example:8448".to_owned()),
        "TOCSIN_LISTEN" => Some("127.0.0.2:9000".to_owned()),
        "TOCSIN_STORE" => Some("redb".to_owned()),
        "TOCSIN_REGISTRATION" => Some("open".to_owned()),
        "TOCSIN_DATA_DIR" => Some("/tmp/x".to_owned()),
        _ => None,
    };
    config.apply_env(env).unwrap();
    assert_eq!(config.server_name, "b.example:8448");
    assert_eq!(config.listen.to_string(), "127.0.0.2:9000");
    assert_eq!(config.store, EngineKind::Redb);
    assert_eq!(config.registration, Registration::Open);
    assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
}

#[test]
fn the_retention_purge_interval_parses_from_file_and_env() {
    let mut config = Config::from_toml("retention_purge_interval_secs = 30").unwrap();
    assert_eq!(config.retention_purge_interval_secs, Some(30));
    config.apply_env(|k| (k == "TOCSIN_RETENTION_PURGE_INTERVAL_SECS").then(|| "5".to_owned())).unwrap();
    assert_eq!(config.retention_purge_interval_secs, Some(5));
    let bad = config.apply_env(|k| (k == "TOCSIN_RETENTION_PURGE_INTERVAL_SECS").then(|| "soon".to_owned()));
    assert!(matches!(bad, Err(ConfigError::Invalid { key: "retention_purge_interval_secs", .. })));
    assert_eq!(Config::default().retention_purge_interval_secs, None);
}

#[test]
fn room_heads_in_memory_parses_from_file_and_env_and_is_never_zero() {
    let mut config = Config::from_toml("room_heads_in_memory = 64").unwrap();
    assert_eq!(config.room_heads_in_memory, 64);
    config.apply_env(|k| (k == "TOCSIN_ROOM_HEADS_IN_MEMORY").then(|| "128".to_owned())).unwrap();
    assert_eq!(config.room_heads_in_memory, 128);
    let bad = config.apply_env(|k| (k == "TOCSIN_ROOM_HEADS_IN_MEMORY").then(|| "many".to_owned()));
    assert!(matches!(bad, Err(ConfigError::Invalid { key: "room_heads_in_memory", .. })));
    config.room_heads_in_memory = 0;
    assert!(matches!(config.validate(), Err(ConfigError::Invalid { key: "room_heads_in_memory", .. })));
    assert_eq!(Config::default().room_heads_in_memory, 4_096);
}

#[test]
fn federation_transport_keys_parse_from_file_and_env() {
    let text = r#"
        server_name = "a.test"
        federation_listen = "127.0.0.1:9448"
        tls_cert = "/etc/tocsin/tls.crt"
        tls_key = "/etc/tocsin/tls.key"
        tls_ca_files = ["/etc/tocsin/ca.pem"]
        tls_verify = false

        [federation_pins]
        "riverton:8448" = "127.0.0.1:8448"
    "#;
    let mut config = Config::from_toml(text).unwrap();
    assert_eq!(config.federation_listen.to_string(), "127.0.0.1:9448");
    assert_eq!(config.tls_cert, Some(PathBuf::from("/etc/tocsin/tls.crt")));
    assert_eq!(config.tls_ca_files, vec![PathBuf::from("/etc/tocsin/ca.pem")]);
    assert!(!config.tls_verify);
    assert_eq!(config.federation_pins["riverton:8448"].to_string(), "127.0.0.1:8448");
    config.validate().unwrap();

    let env = |k: &str| match k {
        "TOCSIN_FEDERATION_LISTEN" => Some("0.0.0.0:8448".to_owned()),
        "TOCSIN_TLS_CA_FILES" => Some("/a.pem:/b.pem".to_owned()),
        "TOCSIN_TLS_VERIFY" => Some("true".to_owned()),
        "TOCSIN_FEDERATION_PINS" => Some("b.test=10.0.0.2:8448, c.test:8448=10.0.0.3:8448".to_owned()),
        _ => None,
    };
    config.apply_env(env).unwrap();
    assert_eq!(config.federation_listen.to_string(), "0.0.0.0:8448");
    assert_eq!(config.tls_ca_files, vec![PathBuf::from("/a.pem"), PathBuf::from("/b.pem")]);
    assert!(config.tls_verify);
    assert_eq!(config.federation_pins.len(), 2);
    assert_eq!(config.federation_pins["c.test:8448"].to_string(), "10.0.0.3:8448");

    let defaults = Config::default();
    assert_eq!(defaults.federation_listen.to_string(), "127.0.0.1:8448");
    assert!(defaults.tls_verify);
    let err = Config::default().apply_env(|k| (k == "TOCSIN_FEDERATION_PINS").then(|| "x".to_owned())).unwrap_err();
    assert!(err.to_string().contains("federation_pins"), "{err}");
    let half = Config { tls_cert: Some(PathBuf::from("/x")), ..Config::default() };
    assert!(half.validate().unwrap_err().to_string().contains("tls_cert"));
}

#[test]
fn federation_list_keys_parse_and_need_each_other() {
    let text =
        "federation_list = \"/etc/tocsin/federation.toml\"\nfederation_operator_keys = [\"/etc/tocsin/operator.pub\"]";
    let mut config = Config::from_toml(text).unwrap();
    assert_eq!(config.federation_list, Some(PathBuf::from("/etc/tocsin/federation.toml")));
    assert_eq!(config.federation_operator_keys, vec![PathBuf::from("/etc/tocsin/operator.pub")]);
    config.validate().unwrap();
    config.apply_env(|k| (k == "TOCSIN_FEDERATION_OPERATOR_KEYS").then(|| "/a.pub,/b.pub".to_owned())).unwrap();
    assert_eq!(config.federation_operator_keys.len(), 2);
    config.federation_operator_keys.clear();
    assert!(config.validate().unwrap_err().to_string().contains("federation_operator_keys"));
    assert!(Config::default().federation_list.is_none());
}

#[test]
fn the_outbound_allow_list_parses_from_file_and_env() {
    let config = Config::from_toml("outbound_ip_allow = [\"127.0.0.0/8\", \"::1\"]").unwrap();
    let ranges: Vec<String> = config.outbound_ip_allow.iter().map(ToString::to_string).collect();
    assert_eq!(ranges, ["127.0.0.0/8", "::1/128"]);
    let mut config = Config::default();
    config.apply_env(|k| (k == "TOCSIN_OUTBOUND_IP_ALLOW").then(|| "10.0.0.0/8, fd00::/8".to_owned())).unwrap();
    assert_eq!(config.outbound_ip_allow.len(), 2);
    let err = config.apply_env(|k| (k == "TOCSIN_OUTBOUND_IP_ALLOW").then(|| "lan".to_owned())).unwrap_err();
    assert!(err.to_string().contains("outbound_ip_allow"), "{err}");
    assert!(Config::from_toml("outbound_ip_allow = [\"10.0.0.0/33\"]").is_err());
}

#[test]
fn bad_values_are_named() {
    let err = Config::from_toml("store = \"postgres\"").unwrap_err();
    assert!(err.contains("postgres"), "{err}");
    let err = Config::from_toml("colour = 3").unwrap_err();
    assert!(err.contains("colour"), "{err}");
    let mut config = Config::default();
    let err = config.apply_env(|k| (k == "TOCSIN_LISTEN").then(|| "nowhere".to_owned())).unwrap_err();
    assert!(err.to_string().contains("nowhere"), "{err}");
    // Token registration without a configured token: the tokens come from the admin API.
    config.registration = Registration::Token;
    config.validate().expect("tokens may come from the admin API alone");
}

#[test]
fn rate_limits_parse_keep_unnamed_defaults_and_switch_off() {
    use crate::http::ratelimit::Limit;
    let text = "[rate_limits]\ntrusted_proxies = [\"10.0.0.1\"]\nsend_per_user = { burst = 10, per_second = 1.5 }\njoin_per_user = { burst = 0 }";
    let mut config = Config::from_toml(text).unwrap();
    let limits = &config.rate_limits;
    assert!(limits.enabled);
    assert_eq!(limits.trusted_proxies, vec!["10.0.0.1".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(limits.send_per_user, Limit::new(10, 1.5));
    assert!(limits.join_per_user.is_off());
    assert_eq!(limits.login_failures_per_user, RateLimitConfig::default().login_failures_per_user);
    config.validate().unwrap();
    config.apply_env(|k| (k == "TOCSIN_RATE_LIMITS").then(|| "off".to_owned())).unwrap();
    assert!(!config.rate_limits.enabled);
    config.apply_env(|k| (k == "TOCSIN_TRUSTED_PROXIES").then(|| "127.0.0.1, ::1".to_owned())).unwrap();
    assert_eq!(config.rate_limits.trusted_proxies.len(), 2);
    assert!(config.apply_env(|k| (k == "TOCSIN_TRUSTED_PROXIES").then(|| "proxy".to_owned())).is_err());
    let never_refills = Config::from_toml("[rate_limits]\nsend_per_user = { burst = 5 }").unwrap();
    assert!(never_refills.validate().unwrap_err().to_string().contains("send_per_user"));
    assert!(Config::from_toml("[rate_limits]\nsends = { burst = 5 }").is_err());
}

#[test]
fn federation_max_backoff_defaults_to_a_minute_and_can_be_set() {
    assert_eq!(Config::default().federation_max_backoff_secs, 60);
    let mut config = Config::from_toml("federation_max_backoff_secs = 30").unwrap();
    assert_eq!(config.federation_max_backoff_secs, 30);
    config.apply_env(|k| (k == "TOCSIN_FEDERATION_MAX_BACKOFF_SECS").then(|| "90".to_owned())).unwrap();
    assert_eq!(config.federation_max_backoff_secs, 90);
    config.federation_max_backoff_secs = 0;
    assert!(config.validate().unwrap_err().to_string().contains("federation_max_backoff_secs"));
}

#[test]
fn the_access_token_lifetime_parses_from_file_and_env_and_is_never_zero() {
    assert_eq!(Config::default().access_token_lifetime_secs, clients::DEFAULT_ACCESS_TOKEN_LIFETIME_SECS);
    let mut config = Config::from_toml("access_token_lifetime_secs = 600").unwrap();
    assert_eq!(config.access_token_lifetime_secs, 600);
    config.apply_env(|k| (k == "TOCSIN_ACCESS_TOKEN_LIFETIME_SECS").then(|| "90".to_owned())).unwrap();
    assert_eq!(config.access_token_lifetime_secs, 90);
    let bad = config.apply_env(|k| (k == "TOCSIN_ACCESS_TOKEN_LIFETIME_SECS").then(|| "1h".to_owned()));
    assert!(matches!(bad, Err(ConfigError::Invalid { key: "access_token_lifetime_secs", .. })));
    let zero = Config { access_token_lifetime_secs: 0, ..Config::default() };
    assert!(matches!(zero.validate(), Err(ConfigError::Invalid { key: "access_token_lifetime_secs", .. })));
}

#[test]
fn url_previews_are_off_by_default_and_their_allow_list_is_checked() {
    assert!(!Config::default().url_previews.enabled);
    let text = "[url_previews]\nenabled = true\nallow = [\"www.dwd.de\", \"https://warnung.bund.de/meldungen/\"]";
    let mut config = Config::from_toml(text).unwrap();
    assert!(config.url_previews.enabled);
    config.validate().unwrap();
    config
        .apply_env(|k| match k {
            "TOCSIN_URL_PREVIEWS" => Some("off".to_owned()),
            "TOCSIN_URL_PREVIEWS_ALLOW" => Some("a.example, ftp://b.example/".to_owned()),
            _ => None,
        })
        .unwrap();
    assert!(!config.url_previews.enabled);
    assert_eq!(config.url_previews.allow, ["a.example", "ftp://b.example/"]);
    assert!(matches!(config.validate(), Err(ConfigError::Invalid { key: "url_previews.allow", .. })));
}

#[test]
fn turn_is_off_by_default_and_needs_one_secret_and_turn_uris() {
    assert!(Config::default().turn.uris.is_empty());
    let text = "[turn]\nuris = [\"turns:turn.riverton.example:5349\"]\nshared_secret = \"s\"\nuser_lifetime_secs = 600";
    let config = Config::from_toml(text).unwrap();
    config.validate().unwrap();
    assert_eq!(config.turn.user_lifetime_secs, Some(600));
    let no_secret = Config::from_toml("[turn]\nuris = [\"turn:turn.riverton.example\"]").unwrap();
    assert!(matches!(no_secret.validate(), Err(ConfigError::Invalid { key: "turn", .. })));
    let not_turn =
        Config::from_toml("[turn]\nuris = [\"https://turn.riverton.example\"]\nshared_secret = \"s\"").unwrap();
    assert!(matches!(not_turn.validate(), Err(ConfigError::Invalid { key: "turn.uris", .. })));
}
