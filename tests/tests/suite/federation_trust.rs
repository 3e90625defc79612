//! The federation list's member CAs in outbound TLS: a member's `ca_cert` or `ca_fingerprint` is
//! trusted for that member only, a fingerprint is matched against the CA the member sends in its
//! chain, and a reloaded list changes what is trusted at once, open connections included.

use std::{path::Path, time::Duration};

use tocsin_node::{
    NodeHandle,
    federation::tls::{Ca, issue_ca, issue_node_cert},
    policy::policies::{
        FederationList, Member, MemberRole, OperatorSecretKey, Timestamp,
        pem::{pem_certificates, sha256_hex},
        sign_list,
    },
    ruma::{ServerName, api::federation::discovery::get_server_version},
};
use tocsin_tests::cluster::Cluster;

use crate::fed::logs;

fn fingerprint(ca: &Ca) -> String {
    sha256_hex(&pem_certificates(&ca.cert_pem()).expect("CA PEM")[0])
}

/// A list of a.test, b.test and c.test, with the CA settings `member` applies.
fn write_list(path: &Path, key: &OperatorSecretKey, version: u64, member: impl Fn(&mut Member)) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let mut members: Vec<Member> =
        ["a.test", "b.test", "c.test"].iter().map(|m| Member::new(m, "Agency", MemberRole::Municipality)).collect();
    members.iter_mut().for_each(member);
    let list = FederationList {
        name: "Trust valley".into(),
        version,
        issued: Timestamp(now - 3600),
        expires: Timestamp(now + 30 * 24 * 3600),
        members,
    };
    std::fs::write(path, sign_list(&list, key).expect("signs").to_toml()).expect("list written");
}

/// Whether `from` can reach `to` over TLS (the unauthenticated version endpoint).
async fn reaches(from: &NodeHandle, to: &ServerName) -> Result<(), String> {
    let request = get_server_version::v1::Request::new();
    from.services.federation_client.send_unauth(to, request).await.map(|_| ()).map_err(|e| e.to_string())
}

async fn until_reaches(from: &NodeHandle, to: &ServerName, want: bool, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = reaches(from, to).await;
        if got.is_ok() == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {got:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_cas_are_trusted_for_their_member_only_and_follow_reloads() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::plan(dir.path(), &["a.test", "b.test", "c.test"]).unwrap();
    // The fire service's CA issues C's certificate, and (by mistake or malice) one for b.test.
    let fire_ca = issue_ca("County fire CA").unwrap();
    let other_ca = issue_ca("Somebody else's CA").unwrap();
    for (i, host, full_chain) in [(1, "b.test", false), (2, "c.test", true)] {
        let (cert, key) = issue_node_cert(&fire_ca, host).unwrap();
        // C sends its CA in its chain, so a fingerprint can be matched against it.
        let chain = if full_chain { format!("{cert}{}", fire_ca.cert_pem()) } else { cert };
        let config = &cluster.members[i].config;
        std::fs::write(config.tls_cert.as_ref().unwrap(), chain).unwrap();
        std::fs::write(config.tls_key.as_ref().unwrap(), key).unwrap();
    }
    // A trusts no CA bundle of its own: only what the list names.
    let (secret, public) = tocsin_node::policy::policies::generate_operator_key();
    let key = OperatorSecretKey::from_text(&secret).unwrap();
    let pub_path = dir.path().join("operator.pub");
    std::fs::write(&pub_path, &public).unwrap();
    let list = dir.path().join("list.toml");
    let fire_fp = fingerprint(&fire_ca);
    write_list(&list, &key, 1, |m| {
        if m.server_name == "c.test" {
            m.ca_fingerprint = Some(fire_fp.clone());
        }
    });
    let a_config = &mut cluster.members[0].config;
    a_config.tls_ca_files.clear();
    a_config.federation_list = Some(list.clone());
    a_config.federation_operator_keys = vec![pub_path];
    let a = cluster.start(0).await.unwrap();
    let b = cluster.start(1).await.unwrap();
    let c = cluster.start(2).await.unwrap();

    // C: its certificate chains to the CA whose fingerprint the list pins.
    reaches(&a, &c.server_name).await.expect("C reached through the pinned fingerprint");
    // B: the fire CA is trusted for c.test only, and nothing is trusted for b.test.
    let refused = reaches(&a, &b.server_name).await.expect_err("the fire CA must not vouch for b.test");
    assert!(refused.contains("b.test"), "{refused}");

    // Version 2 names the fire CA for b.test too: trusted without a restart.
    let fire_pem = fire_ca.cert_pem();
    write_list(&list, &key, 2, |m| match m.server_name.as_str() {
        "b.test" => m.ca_cert = Some(fire_pem.clone()),
        "c.test" => m.ca_fingerprint = Some(fire_fp.clone()),
        _ => {}
    });
    until_reaches(&a, &b.server_name, true, "b.test never trusted after the reload").await;
    reaches(&a, &c.server_name).await.expect("C still reached");

    // Version 3 pins another CA for C: the open connection to C must not keep working.
    let other_fp = fingerprint(&other_ca);
    write_list(&list, &key, 3, |m| match m.server_name.as_str() {
        "b.test" => m.ca_cert = Some(fire_pem.clone()),
        "c.test" => m.ca_fingerprint = Some(other_fp.clone()),
        _ => {}
    });
    until_reaches(&a, &c.server_name, false, "C still reached after its CA was replaced").await;
    reaches(&a, &b.server_name).await.expect("B still reached");
    for node in [a, b, c] {
        node.shutdown().await;
    }
}
