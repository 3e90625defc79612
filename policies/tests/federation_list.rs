//! Signing, verifying and accepting federation lists.

use tocsin_policies::{
    FederationList, ListStatus, Member, MemberRole, OperatorPublicKey, OperatorSecretKey, PolicyError, Timestamp,
    VerifiedList, accept_update, generate_operator_key, parse_federation_list, sign_list, sign_text, verify,
};

const UNSIGNED: &str = r#"
# A test federation.
[federation]
name = "Test federation"
version = 3
issued = "2025-01-01T00:00:00Z"
expires = "2025-02-01T00:00:00Z"

[[member]]
server_name = "riverton:8448"
agency = "City of Riverton"
role = "municipality"
address = "127.0.0.1:8448"

[[member]]
server_name = "county-fire:8450"
agency = "County Fire Service"
role = "fire"
ca_fingerprint = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89"
"#;

fn t(s: &str) -> i64 {
    Timestamp::parse(s).expect("timestamp").unix()
}

fn keypair() -> (OperatorSecretKey, OperatorPublicKey) {
    let (secret, public) = generate_operator_key();
    let secret = OperatorSecretKey::from_text(&secret).expect("secret");
    let public = OperatorPublicKey::from_text(&public).expect("public");
    (secret, public)
}

fn signed(text: &str, key: &OperatorSecretKey) -> String {
    sign_text(text, key, None).expect("sign")
}

fn with_version(text: &str, version: u64) -> String {
    text.replace("version = 3", &format!("version = {version}"))
}

fn verified(text: &str, key: &OperatorSecretKey, public: &OperatorPublicKey) -> VerifiedList {
    verify(&signed(text, key), std::slice::from_ref(public)).expect("verify")
}

#[test]
fn a_signed_list_verifies_and_answers_lookups() {
    let (secret, public) = keypair();
    let text = signed(UNSIGNED, &secret);
    assert!(text.starts_with("\n# A test federation."), "comments are kept:\n{text}");
    assert!(text.contains(&format!("[signature]\nkey_id = \"{}\"\n", public.key_id())));
    let list = verify(&text, &[public]).expect("verify");
    assert_eq!(list.key_id(), public.key_id());
    assert_eq!(list.version, 3);
    assert!(list.is_member("riverton:8448"));
    assert!(!list.is_member("riverton:8449"));
    assert_eq!(list.role_of("county-fire:8450"), Some(MemberRole::Fire));
    let fire = list.member("county-fire:8450").expect("member");
    // Fingerprints are normalised to lower-case hex without separators.
    assert_eq!(fire.ca_fingerprint.as_deref().map(str::len), Some(64));
    assert!(fire.ca_fingerprint.as_deref().is_some_and(|f| f.starts_with("abcdef0123")));
}

#[test]
fn comments_whitespace_and_order_do_not_break_the_signature() {
    let (secret, public) = keypair();
    let text = signed(UNSIGNED, &secret);
    // Reorder the members, add comments and blank lines, use a TOML datetime literal.
    let (head, rest) = text.split_once("[[member]]").expect("members");
    let (first, rest) = rest.split_once("[[member]]").expect("second member");
    let (second, sig) = rest.split_once("[signature]").expect("signature");
    let edited = format!(
        "{}\n\n# moved\n[[member]]{}\n[[member]]   # first now\n{}[signature]{}",
        head.replace("issued = \"2025-01-01T00:00:00Z\"", "issued = 2025-01-01T00:00:00Z"),
        second,
        first,
        sig
    );
    assert_ne!(edited, text);
    verify(&edited, &[public]).expect("still valid after cosmetic edits");
}

#[test]
fn a_forged_signature_is_refused() {
    let (secret, public) = keypair();
    let (forger, _) = keypair();
    // The forger signs with their own key but claims the pinned key's id.
    let forged = signed(UNSIGNED, &forger).replace(&forger.public_key().key_id(), &public.key_id());
    assert!(matches!(verify(&forged, &[public]), Err(PolicyError::BadSignature { .. })));
    // Random bytes in the signature are refused too.
    let text = signed(UNSIGNED, &secret);
    let sig_start = text.find("ed25519 = \"").expect("sig") + 11;
    let mut garbled = text.clone();
    garbled.replace_range(sig_start..sig_start + 4, "AAAA");
    assert!(matches!(verify(&garbled, &[public]), Err(PolicyError::BadSignature { .. })));
    // A signature by a key that is not pinned says so.
    let other = signed(UNSIGNED, &forger);
    match verify(&other, &[public]) {
        Err(PolicyError::UnpinnedKey { key_id, pinned }) => {
            assert_eq!(key_id, forger.public_key().key_id());
            assert_eq!(pinned, vec![public.key_id()]);
        }
        other => panic!("expected UnpinnedKey, got {other:?}"),
    }
    // No signature at all.
    assert!(matches!(verify(UNSIGNED, &[public]), Err(PolicyError::MissingSignature)));
    // A truncated signature is malformed.
    let short = text.replace(&text[sig_start..sig_start + 20], "");
    assert!(matches!(verify(&short, &[public]), Err(PolicyError::MalformedSignature(_))));
}

#[test]
fn a_member_changed_after_signing_is_refused() {
    let (secret, public) = keypair();
    let text = signed(UNSIGNED, &secret);
    for (from, to) in [
        ("address = \"127.0.0.1:8448\"", "address = \"10.6.6.6:8448\""),
        ("role = \"fire\"", "role = \"police\""),
        ("agency = \"City of Riverton\"", "agency = \"City of Riverton \""),
        ("version = 3", "version = 4"),
        ("expires = \"2025-02-01T00:00:00Z\"", "expires = \"2035-02-01T00:00:00Z\""),
    ] {
        let tampered = text.replace(from, to);
        assert_ne!(tampered, text, "{from}");
        assert!(
            matches!(verify(&tampered, &[public]), Err(PolicyError::BadSignature { .. })),
            "changing {from} must break the signature"
        );
    }
    // An added member as well.
    let added = text.replace(
        "[signature]",
        "[[member]]\nserver_name = \"evil:8448\"\nagency = \"Evil\"\nrole = \"state\"\n\n[signature]",
    );
    assert!(matches!(verify(&added, &[public]), Err(PolicyError::BadSignature { .. })));
    // A removed member.
    let start = text.find("[[member]]").expect("member");
    let end = start + text[start + 1..].find("[[member]]").expect("second") + 1;
    let mut removed = text.clone();
    removed.replace_range(start..end, "");
    assert!(matches!(verify(&removed, &[public]), Err(PolicyError::BadSignature { .. })));
}

#[test]
fn re_signing_replaces_the_old_signature() {
    let (secret, public) = keypair();
    let v3 = signed(UNSIGNED, &secret);
    let v4 = signed(&with_version(&v3, 4), &secret);
    assert_eq!(v4.matches("[signature]").count(), 1, "{v4}");
    assert_eq!(verify(&v4, &[public]).expect("verify").version, 4);
}

#[test]
fn sign_list_output_is_a_verifiable_file() {
    let (secret, public) = keypair();
    let list = FederationList {
        name: "Built in code".into(),
        version: 1,
        issued: Timestamp(t("2025-01-01T00:00:00Z")),
        expires: Timestamp(t("2025-01-02T00:00:00Z")),
        members: vec![Member::new("lakeside:8449", "City of Lakeside \"Süd\"", MemberRole::Municipality)],
    };
    let signed = sign_list(&list, &secret).expect("sign");
    let file = signed.to_toml();
    let verified = verify(&file, &[public]).expect("verify");
    assert_eq!(verified.list(), &list);
    // The canonical text is exactly what precedes the signature table.
    assert!(file.starts_with(&list.canonical_text()));
    assert_eq!(parse_federation_list(&file, None).expect("parse").list.canonical_text(), list.canonical_text());
}

#[test]
fn invalid_lists_are_not_signed() {
    let (secret, _) = keypair();
    let bad = UNSIGNED.replace("expires = \"2025-02-01T00:00:00Z\"", "expires = \"2024-02-01T00:00:00Z\"");
    match sign_text(&bad, &secret, None) {
        Err(PolicyError::Invalid(d)) => {
            assert!(
                d.to_string().contains("federation.expires: expires (2024-02-01T00:00:00Z) must be after issued"),
                "{d}"
            );
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn rollback_and_replay_are_refused() {
    let (secret, public) = keypair();
    let now = t("2025-01-10T00:00:00Z");
    let v3 = verified(UNSIGNED, &secret, &public);
    let active = accept_update(None, v3.clone(), now).expect("first list");
    let v2 = verified(&with_version(UNSIGNED, 2), &secret, &public);
    assert!(matches!(accept_update(Some(&active), v2, now), Err(PolicyError::Rollback { current: 3, offered: 2 })));
    // The same version again (a replay) is refused too.
    assert!(matches!(accept_update(Some(&active), v3, now), Err(PolicyError::Rollback { current: 3, offered: 3 })));
    let v4 = verified(&with_version(UNSIGNED, 4), &secret, &public);
    assert_eq!(accept_update(Some(&active), v4, now).expect("newer").version, 4);
}

#[test]
fn an_already_expired_list_is_refused() {
    let (secret, public) = keypair();
    let v3 = verified(UNSIGNED, &secret, &public);
    let after = t("2025-02-01T00:00:00Z");
    let err = accept_update(None, v3, after).expect_err("expired");
    assert!(matches!(err, PolicyError::ExpiredOnArrival { version: 3, .. }));
    assert_eq!(err.to_string(), "refusing federation list version 3: it expired at 2025-02-01T00:00:00Z");
}

#[test]
fn an_expired_active_list_stays_enforced() {
    let (secret, public) = keypair();
    let active = accept_update(None, verified(UNSIGNED, &secret, &public), t("2025-01-10T00:00:00Z")).expect("accept");
    assert_eq!(active.status(t("2025-01-31T23:59:59Z")), ListStatus::Active);
    let later = t("2025-03-01T00:00:00Z");
    assert_eq!(active.status(later), ListStatus::Expired { since: Timestamp(t("2025-02-01T00:00:00Z")) });
    // Still the list in force: lookups keep working.
    assert!(active.is_member("riverton:8448"));
    // An older or equal list cannot replace it, expired or not; a newer, unexpired one can.
    let v2 = verified(&with_version(UNSIGNED, 2), &secret, &public);
    assert!(accept_update(Some(&active), v2, later).is_err());
    let v5 = with_version(UNSIGNED, 5).replace("2025-02-01T00:00:00Z", "2025-04-01T00:00:00Z");
    let v5 = verified(&v5, &secret, &public);
    assert_eq!(accept_update(Some(&active), v5, later).expect("newer").version, 5);
}
