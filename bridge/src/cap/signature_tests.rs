//! The shape checks that come before libxmlsec1: a signature must cover the whole alert.
//! (Signing and verifying with real keys: `tests/tests/suite/bridge_signature.rs`.)

use std::path::Path;

use super::signature::Verifier;

fn verifier() -> Verifier {
    let cert = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/signature/trusted-cert.pem");
    Verifier::load(&[cert]).expect("the test certificate loads")
}

fn alert_with(signature: &str) -> String {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/cap/10-flood-alert.xml"))
        .expect("fixture");
    doc.replace("</alert>", &format!("{signature}</alert>"))
}

fn signature(reference_uri: &str, transform: &str) -> String {
    format!(
        r#"<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"><SignedInfo>
<CanonicalizationMethod Algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315"/>
<SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>
<Reference URI="{reference_uri}"><Transforms><Transform Algorithm="{transform}"/></Transforms>
<DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><DigestValue>AAAA</DigestValue></Reference>
</SignedInfo><SignatureValue>AAAA</SignatureValue></Signature>"#
    )
}

const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";

#[test]
fn unsigned_and_partial_signatures_are_refused_before_any_crypto() {
    let v = verifier();
    let e = v.verify(&alert_with("")).unwrap_err();
    assert!(e.message.contains("unsigned") && e.element == "alert/Signature", "{e}");

    let e = v.verify(&alert_with(&signature("#info-1", ENVELOPED))).unwrap_err();
    assert!(e.message.contains("whole alert (URI=\"\")"), "{e}");

    let e = v.verify(&alert_with(&signature("", "http://www.w3.org/2001/10/xml-exc-c14n#"))).unwrap_err();
    assert!(e.message.contains("enveloped-signature transform"), "{e}");

    let two = format!("{}{}", signature("", ENVELOPED), signature("", ENVELOPED));
    let e = v.verify(&alert_with(&two)).unwrap_err();
    assert!(e.message.contains("more than one"), "{e}");

    // Well shaped but made up: libxmlsec1 refuses it.
    let e = v.verify(&alert_with(&signature("", ENVELOPED))).unwrap_err();
    assert!(e.message.contains("does not verify"), "{e}");
}

#[test]
fn a_file_that_is_not_a_certificate_is_refused_at_load() {
    let not_cert = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/cap/10-flood-alert.xml");
    assert!(Verifier::load(&[not_cert]).is_err());
    assert!(Verifier::load(&["/nonexistent/cert.pem".into()]).is_err());
}
