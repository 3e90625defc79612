//! XML signatures: a folder source that requires them posts a CAP alert signed (XML-DSig,
//! enveloped, by `xmlsec1`) with a trusted key, and quarantines, with a message that says why,
//! a signed alert changed after signing, one signed with another key, and an unsigned one;
//! pushed, an unsigned alert is answered 400.
//! The documents are signed here with keys made here (`openssl`, `xmlsec1`).

use std::path::Path;
use std::process::Command;

use crate::bridge::{
    admin_apply, alarms_in, bridge_config, drop_file, fixture, metric, metrics, officer_in_rooms, policy, room_id,
};
use crate::common;

const SIGNATURE_TEMPLATE: &str = r#"<Signature xmlns="http://www.w3.org/2000/09/xmldsig#">
    <SignedInfo>
      <CanonicalizationMethod Algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315"/>
      <SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>
      <Reference URI="">
        <Transforms>
          <Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>
        </Transforms>
        <DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>
        <DigestValue/>
      </Reference>
    </SignedInfo>
    <SignatureValue/>
    <KeyInfo><X509Data/></KeyInfo>
  </Signature>
</alert>"#;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (openssl and xmlsec1 must be installed)"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A self-signed RSA key and certificate in `dir`: (key, cert).
fn keypair(dir: &Path, name: &str) -> (String, String) {
    let key = dir.join(format!("{name}.key.pem")).display().to_string();
    let cert = dir.join(format!("{name}.cert.pem")).display().to_string();
    run(Command::new("openssl").args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]).args([
        "-subj",
        &format!("/CN={name}"),
        "-keyout",
        &key,
        "-out",
        &cert,
    ]));
    (key, cert)
}

/// `doc` with an enveloped signature by `key`, made by xmlsec1.
fn sign(dir: &Path, doc: &str, (key, cert): &(String, String)) -> String {
    let template = dir.join("template.xml");
    let signed = dir.join("signed.xml");
    std::fs::write(&template, doc.replace("</alert>", SIGNATURE_TEMPLATE)).unwrap();
    run(Command::new("xmlsec1")
        .args(["--sign", "--privkey-pem", &format!("{key},{cert}"), "--output"])
        .arg(&signed)
        .arg(&template));
    std::fs::read_to_string(signed).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_cap_is_posted_and_tampered_or_unsigned_cap_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let trusted = keypair(&keys, "warning-office");
    let other = keypair(&keys, "someone-else");

    let policy_file = dir.path().join("policy.toml");
    std::fs::write(&policy_file, policy()).unwrap();
    let node = common::start(&dir.path().join("node"), |c| c.policy = Some(policy_file.clone())).await;
    admin_apply(&node).await;
    let (officer, seen) = officer_in_rooms(&node).await;
    let flood = room_id(&officer, "flood-ops").await;

    let mut config = bridge_config(dir.path(), &node.base_url(), &policy_file);
    for s in &mut config.sources {
        if s.name == "feed-a" || s.name == "push" {
            s.require_signature = true;
            s.trusted_certs = vec![trusted.1.clone().into()];
        }
    }
    let bridge = tocsin_bridge::start(config).await.expect("bridge starts");
    let in_a = dir.path().join("in-a");

    let signed = sign(&keys, &fixture("10-flood-alert.xml"), &trusted);
    assert!(signed.contains("<SignatureValue>") && !signed.contains("<SignatureValue/>"), "{signed}");
    let storm = sign(&keys, &fixture("20-storm-bilingual.xml"), &trusted);
    let tampered = storm.replace("Gale-force gusts up to 110", "Gale-force gusts up to 150");
    assert_ne!(tampered, storm);
    let chem = fixture("30-chemical-release.xml");
    let foreign = sign(&keys, &fixture("40-exercise-flood-drill.xml"), &other);
    drop_file(&in_a, "1-signed.xml", &signed);
    drop_file(&in_a, "2-tampered.xml", &tampered);
    drop_file(&in_a, "3-unsigned.xml", &chem);
    drop_file(&in_a, "4-other-key.xml", &foreign);

    crate::bridge::wait_for(&officer, 30, || {
        alarms_in(&seen, &flood)
            .iter()
            .any(|s| s.content["body"].as_str().unwrap_or("").contains("River Aller"))
            .then_some(())
    })
    .await;
    common::eventually_until(10, || async {
        std::fs::read_dir(&in_a).unwrap().filter(|e| e.as_ref().unwrap().path().is_file()).count() == 0
    })
    .await;
    let why =
        |name: &str| std::fs::read_to_string(in_a.join(format!("quarantine/{name}.error.txt"))).unwrap_or_default();
    assert!(in_a.join("done/1-signed.xml").exists(), "the signed alert was taken");
    assert!(
        why("2-tampered.xml").contains("does not verify with any trusted certificate"),
        "{}",
        why("2-tampered.xml")
    );
    assert!(why("2-tampered.xml").contains("<alert/Signature>"), "{}", why("2-tampered.xml"));
    assert!(
        why("3-unsigned.xml").contains("requires an XML signature") && why("3-unsigned.xml").contains("unsigned"),
        "{}",
        why("3-unsigned.xml")
    );
    assert!(why("4-other-key.xml").contains("does not verify"), "{}", why("4-other-key.xml"));
    let m = metrics(&bridge).await;
    assert_eq!(metric(&m, "alerts_quarantined_total"), 3, "{m}");
    assert_eq!(metric(&m, "alerts_posted_total"), 1, "only the signed alert: {m}");
    common::sync(&officer).await;
    assert!(
        !alarms_in(&seen, &flood).iter().any(|s| s.content["body"].as_str().unwrap_or("").contains("Gale-force")),
        "the tampered alert was not posted"
    );

    // Pushed CAP to a source that requires signatures: the unsigned document is answered 400
    // naming the signature, the signed one 202.
    let push = |doc: String| {
        let url = format!("http://{}/cap/push", bridge.http_addr.unwrap());
        async move {
            let sig = tocsin_bridge::sources::push::sign("hmac-key", doc.as_bytes());
            let resp =
                reqwest::Client::new().post(url).header("X-Tocsin-Signature", sig).body(doc).send().await.unwrap();
            (resp.status().as_u16(), resp.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let (status, answer) = push(fixture("60-outside-every-room.xml")).await;
    assert_eq!((status, answer["element"].as_str()), (400, Some("alert/Signature")), "{answer}");
    let (status, answer) = push(sign(&keys, &fixture("60-outside-every-room.xml"), &trusted)).await;
    assert_eq!(status, 202, "{answer}");

    bridge.stop().await;
    node.shutdown().await;
}
