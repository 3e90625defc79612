//! The standard's own examples and the realistic alerts in `testdata/cap` parse; what is wrong
//! is named with element and line; what the writer makes validates against the OASIS schema.

use std::path::{Path, PathBuf};

use super::*;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/cap")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(testdata().join(name)).unwrap()
}

#[test]
fn every_example_of_the_standard_and_every_realistic_alert_parses() {
    let mut files: Vec<_> = std::fs::read_dir(testdata()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in files.iter().filter(|f| !f.ends_with("90-malformed.xml")) {
        let text = std::fs::read_to_string(file).unwrap();
        parse(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
    assert!(files.len() >= 12);
}

#[test]
fn all_elements_are_read() {
    let a = parse(&read("02-oasis-a2-severe-thunderstorm.xml")).unwrap();
    assert_eq!(
        (a.identifier.as_str(), a.status, a.msg_type, a.scope),
        ("KSTO1055887203", Status::Actual, MsgType::Alert, Scope::Public)
    );
    let info = &a.infos[0];
    assert_eq!(
        (info.urgency, info.severity, info.certainty),
        (Urgency::Immediate, Severity::Severe, Certainty::Observed)
    );
    assert_eq!(info.response_types, vec![ResponseType::Shelter]);
    assert_eq!(info.event_codes[0], NamedValue { value_name: "SAME".into(), value: "SVR".into() });
    assert_eq!(info.areas[0].polygons[0].len(), 5);
    assert_eq!(info.areas[0].geocodes.len(), 3);
    assert_eq!(cap_datetime(&info.expires.unwrap()), "2003-06-17T16:00:00-07:00");

    let eq = parse(&read("03-oasis-a3-earthquake-update.xml")).unwrap();
    assert_eq!(eq.references[0].key(), "trinet@caltech.usgs.gov,TRI13970876.1,2003-06-11T20:30:00-07:00");
    assert_eq!(eq.infos[0].areas[0].circles[0].radius_km, 0.0);
    assert_eq!(eq.infos[0].parameters.len(), 5);

    let amber = parse(&read("04-oasis-a4-amber-multilingual.xml")).unwrap();
    assert_eq!(amber.infos.iter().map(|i| i.language.as_str()).collect::<Vec<_>>(), ["en-US", "es-US"]);
    assert_eq!(amber.source.as_deref(), Some("SW"));

    let hsas = parse(&read("01-oasis-a1-homeland-security.xml")).unwrap();
    assert_eq!(hsas.infos[0].resources[0].mime_type, "image/gif");
    assert_eq!(hsas.infos[0].language, "en-US", "language defaults to en-US");

    let chem = parse(&read("30-chemical-release.xml")).unwrap();
    let r = &chem.infos[0].resources[0];
    assert_eq!((r.size, r.digest.is_some()), (Some(48213), true));
    let flood = parse(&read("10-flood-alert.xml")).unwrap();
    assert_eq!((flood.infos[0].areas[0].altitude, flood.infos[0].areas[0].ceiling), (Some(0.0), Some(150.0)));
}

#[test]
fn an_invalid_document_names_element_and_line() {
    let e = parse(&read("90-malformed.xml")).unwrap_err();
    assert_eq!((e.line, e.element.as_str()), (13, "alert/info[1]/severity"), "{e}");
    assert!(e.to_string().contains("\"Very bad\""), "{e}");

    let flood = read("10-flood-alert.xml");
    let cases = [
        (flood.replace("<sender>warnings@riverton.example</sender>\n", ""), "alert/sender", "required"),
        (flood.replace("+01:00</sent>", "Z</sent>"), "alert/sent", "offset required"),
        (
            flood.replace("<polygon>52.05,13.10 52.05", "<polygon>52.06,13.10 52.05"),
            "alert/info[1]/area[1]/polygon[1]",
            "closed",
        ),
        (flood.replace("<altitude>0</altitude>\n", ""), "alert/info[1]/area[1]/ceiling", "altitude"),
        (
            flood.replace("<msgType>Alert</msgType>", "<msgType>Update</msgType>"),
            "alert/references",
            "required for msgType Update",
        ),
        (flood.replace("<web>", "<colour>red</colour>\n    <web>"), "alert/info[1]/colour", "unknown element"),
        (flood.replace("<scope>Public</scope>", "<scope>Restricted</scope>"), "alert/restriction", "Restricted"),
        (flood.replace("</info>", "</inf>"), "document", "not well-formed"),
        (
            flood.replace("urn:oasis:names:tc:emergency:cap:1.2", "urn:oasis:names:tc:emergency:cap:1.1"),
            "alert",
            "namespace",
        ),
    ];
    for (text, element, words) in cases {
        let e = parse(&text).unwrap_err();
        assert_eq!(e.element, element, "{e}");
        assert!(e.to_string().contains(words), "{e}");
        assert!(e.line > 1, "{e}");
    }
}

#[test]
fn written_alerts_parse_back_equal_and_validate_against_the_oasis_schema() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/CAP-v1.2.xsd");
    for name in [
        "02-oasis-a2-severe-thunderstorm.xml",
        "04-oasis-a4-amber-multilingual.xml",
        "10-flood-alert.xml",
        "12-flood-cancel.xml",
        "30-chemical-release.xml",
    ] {
        let alert = parse(&read(name)).unwrap();
        let xml = write::to_xml(&alert);
        assert_eq!(parse(&xml).unwrap(), alert, "{name} round-trips:\n{xml}");
        let file = dir.path().join(name);
        std::fs::write(&file, &xml).unwrap();
        let out = std::process::Command::new("xmllint")
            .args(["--noout", "--schema"])
            .arg(&schema)
            .arg(&file)
            .output()
            .expect("xmllint (libxml2-utils) is installed");
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
