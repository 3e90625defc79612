//! XML signatures (XML-DSig) of CAP documents, for sources that require them. The signature is
//! checked by libxmlsec1 (through the `xmlsec` crate: canonicalization, digests, the signature
//! value) against each trusted certificate in turn. Before that, the signature's shape is
//! checked here: one `<Signature>` as a child of `<alert>` with one `<Reference URI="">` and the
//! enveloped-signature transform, so a valid signature always covers the whole alert and never
//! just a part of it.

use std::path::{Path, PathBuf};

use xmlsec::{XmlSecKey, XmlSecKeyFormat, XmlSecSignatureContext};

use super::xml::{Element, read_tree};
use super::{CapError, DSIG_NS};

const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const PATH: &str = "alert/Signature";

/// A trusted certificate that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}: not a PEM certificate libxmlsec1 can load")]
    Load(PathBuf),
}

/// The certificates whose signatures a source accepts.
#[derive(Debug, Clone)]
pub struct Verifier {
    /// (file, PEM) of each trusted certificate.
    certs: Vec<(PathBuf, Vec<u8>)>,
}

impl Verifier {
    /// Reads and loads each certificate once, so a bad file is found at start, not per alert.
    pub fn load(paths: &[PathBuf]) -> Result<Verifier, CertError> {
        let mut certs = Vec::new();
        for path in paths {
            let pem = std::fs::read(path).map_err(|source| CertError::Io { path: path.clone(), source })?;
            XmlSecKey::from_memory(&pem, XmlSecKeyFormat::CertPem, None).map_err(|_| CertError::Load(path.clone()))?;
            certs.push((path.clone(), pem));
        }
        Ok(Verifier { certs })
    }

    /// `Ok` when `text` carries an enveloped signature over the whole alert that verifies
    /// against one of the trusted certificates.
    pub fn verify(&self, text: &str) -> Result<(), CapError> {
        let err = |line: usize, message: &str| CapError { line, element: PATH.into(), message: message.into() };
        let root = read_tree(text).map_err(|e| CapError {
            line: e.line,
            element: "document".into(),
            message: format!("not well-formed XML: {}", e.message),
        })?;
        let sigs: Vec<&Element> = root.children.iter().filter(|c| is_dsig(c, "Signature")).collect();
        let sig = match sigs.as_slice() {
            [] => {
                return Err(err(
                    root.line,
                    "this source requires an XML signature and the document has none (unsigned)",
                ));
            }
            [one] => *one,
            [_, second, ..] => return Err(err(second.line, "more than one signature")),
        };
        check_shape(sig).map_err(|m| err(sig.line, &m))?;
        let doc = libxml::parser::Parser::default()
            .parse_string(text)
            .map_err(|e| err(sig.line, &format!("libxml2 cannot read the document: {e:?}")))?;
        for (_, pem) in &self.certs {
            let Ok(key) = XmlSecKey::from_memory(pem, XmlSecKeyFormat::CertPem, None) else { continue };
            let mut ctx = XmlSecSignatureContext::new();
            ctx.insert_key(key);
            if let Ok(true) = ctx.verify_document(&doc) {
                return Ok(());
            }
        }
        Err(err(
            sig.line,
            "the signature does not verify with any trusted certificate (the document was changed after signing, or signed with another key)",
        ))
    }

    /// The certificate files, for messages.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.certs.iter().map(|(p, _)| p.as_path())
    }
}

fn is_dsig(e: &Element, name: &str) -> bool {
    e.name == name && e.ns.as_deref() == Some(DSIG_NS)
}

/// One reference, to the whole document (`URI=""`), with the enveloped-signature transform.
fn check_shape(sig: &Element) -> Result<(), String> {
    let signed_info = sig.children.iter().find(|c| is_dsig(c, "SignedInfo")).ok_or("no <SignedInfo>")?;
    let refs: Vec<&Element> = signed_info.children.iter().filter(|c| is_dsig(c, "Reference")).collect();
    let [reference] = refs.as_slice() else {
        return Err(format!("expected one <Reference> to the whole alert, found {}", refs.len()));
    };
    if reference.attr("URI") != Some("") {
        return Err("the <Reference> must cover the whole alert (URI=\"\")".into());
    }
    let enveloped = reference
        .children
        .iter()
        .filter(|c| is_dsig(c, "Transforms"))
        .flat_map(|t| t.children.iter())
        .any(|t| is_dsig(t, "Transform") && t.attr("Algorithm") == Some(ENVELOPED));
    if !enveloped {
        return Err("the <Reference> lacks the enveloped-signature transform".into());
    }
    Ok(())
}
