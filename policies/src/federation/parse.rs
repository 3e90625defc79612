//! Reading a federation list: the TOML file decoded with positions, every member validated,
//! every problem reported with its file and line.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::decode::{Obj, Reader};

/// A parsed federation list with its signature table (if any) and its warnings.
#[derive(Debug, Clone)]
pub struct ParsedList {
    pub list: FederationList,
    pub signature: Option<Signature>,
    pub warnings: Diagnostics,
}

/// Parses and validates a federation list. On failure, returns every diagnostic found.
/// The signature is read but not checked; see [`crate::signing::verify`].
pub fn parse_federation_list(text: &str, file: Option<&Path>) -> Result<ParsedList, Diagnostics> {
    let mut r = Reader::new(text, file.map(|f| Arc::new(f.to_path_buf())));
    let Some(doc) = r.parse() else {
        return Err(Diagnostics(r.diags));
    };
    let mut root = Obj::new(&r, doc.get_ref(), doc.span(), String::new());
    let decoded = decode_list(&mut r, &mut root);
    root.finish(&mut r);
    let mut diags = Diagnostics(r.diags);
    let Some((list, signature)) = decoded else {
        return Err(diags);
    };
    // Re-locate list-level semantic diagnostics at the [federation] table's fields.
    for mut d in list.validate() {
        if d.file.is_none() {
            d.file = file.map(Path::to_path_buf);
        }
        if d.pos.is_none() {
            d.pos = list_field_pos(text, &d.path);
        }
        diags.push(d);
    }
    if diags.has_errors() {
        diags.sort();
        return Err(diags);
    }
    Ok(ParsedList { list, signature, warnings: diags })
}

/// Finds `federation.<field>` in the source for diagnostics about list-level fields.
pub(crate) fn list_field_pos(text: &str, path: &str) -> Option<crate::diagnostics::Pos> {
    let field = path.strip_prefix("federation.")?;
    let mut in_federation = false;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with('[') {
            in_federation = t.starts_with("[federation]");
        } else if in_federation && t.starts_with(field) && t[field.len()..].trim_start().starts_with('=') {
            let indent = line.len() - t.len();
            return Some(crate::diagnostics::Pos::from_offset(text, offset + indent));
        }
        offset += line.len();
    }
    None
}

fn decode_list(r: &mut Reader<'_>, root: &mut Obj<'_, '_>) -> Option<(FederationList, Option<Signature>)> {
    let header = root.opt_table(r, "federation");
    let members = root.tables(r, "member");
    let sig_obj = root.opt_table(r, "signature");

    let mut fields = None;
    match header {
        Some(mut h) => {
            let name = h.req_str(r, "name");
            let version = h.req_int(r, "version", 1, i64::MAX);
            let issued = timestamp(r, &mut h, "issued");
            let expires = timestamp(r, &mut h, "expires");
            h.finish(r);
            if let (Some(name), Some(version), Some(issued), Some(expires)) = (name, version, issued, expires) {
                fields = Some((name, version.unsigned_abs(), issued, expires));
            }
        }
        None => {
            let message = "missing required table [federation] (name, version, issued, expires)".to_string();
            r.error(&(0..0), "federation", message);
        }
    }

    let mut decoded_members = Vec::with_capacity(members.len());
    for mut m in members {
        let server_name = m.req_str(r, "server_name");
        let agency = m.req_str(r, "agency");
        let role = m.req_keyword::<MemberRole>(r, "role");
        let address = m.opt_str(r, "address");
        let ca_cert = m.opt_str(r, "ca_cert").map(|p| normalise_pem(&p));
        let ca_fingerprint = m.opt_str(r, "ca_fingerprint");
        let (alarm_senders, alarm_origin) = match m.opt_table(r, "alarm_senders") {
            Some(mut t) => {
                let mut senders = BTreeMap::new();
                for (keyword, level) in AlarmLevel::ALL {
                    if let Some(who) = t.opt_str_list(r, keyword) {
                        senders.insert(*level, who);
                    }
                }
                (senders, t.finish(r))
            }
            None => (BTreeMap::new(), Origin::default()),
        };
        let origin = m.finish(r);
        if let (Some(server_name), Some(agency), Some(role)) = (server_name, agency, role) {
            let ca_fingerprint = ca_fingerprint.map(|fp| normalise_fingerprint(&fp).unwrap_or(fp));
            decoded_members.push(Member {
                server_name,
                agency,
                role,
                address,
                ca_cert,
                ca_fingerprint,
                alarm_senders,
                origin,
                alarm_origin,
            });
        }
    }

    let signature = sig_obj.and_then(|mut s| {
        let key_id = s.req_str(r, "key_id");
        let ed25519 = s.req_str(r, "ed25519");
        s.finish(r);
        Some(Signature { key_id: key_id?, ed25519: ed25519? })
    });

    if r.diags.iter().any(Diagnostic::is_error) {
        return None;
    }
    let (name, version, issued, expires) = fields?;
    let list = FederationList { name, version, issued, expires, members: decoded_members };
    Some((list, signature))
}

fn timestamp(r: &mut Reader<'_>, obj: &mut Obj<'_, '_>, key: &'static str) -> Option<Timestamp> {
    let text = obj.req_str_or_datetime(r, key)?;
    match Timestamp::parse(&text) {
        Ok(t) => Some(t),
        Err(e) => {
            let path = obj.field_path(key);
            let span = obj.span_of(key);
            r.error(&span, &path, e.to_string());
            None
        }
    }
}

/// Reads and parses a federation list file.
pub fn read_federation_list(path: &Path) -> Result<ParsedList, crate::PolicyError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| crate::PolicyError::Io { path: PathBuf::from(path), source })?;
    parse_federation_list(&text, Some(path)).map_err(crate::PolicyError::Invalid)
}
