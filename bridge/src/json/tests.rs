use std::collections::BTreeMap;
use std::path::Path;

use chrono::Utc;

use super::template::AlertTemplate;
use super::{JsonError, nina};
use crate::cap::{Category, MsgType, Severity, Status, Urgency};

fn testdata(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn map_data_lists_ids_and_versions() {
    let listed = nina::map_data(&testdata("nina/mapData.json")).unwrap();
    let ids: Vec<(&str, u64)> = listed.iter().map(|l| (l.id.as_str(), l.version)).collect();
    assert_eq!(ids, [("mow.DE-NI-RV-W001-20261203-1-000", 1), ("mow.DE-NW-BN-SE030-20261203-30-000", 3)]);
    let bad = nina::map_data(r#"[{"id": "../../etc/passwd", "version": 1}]"#).unwrap_err();
    assert_eq!(bad.at, "/0/id", "{bad}");
}

#[test]
fn a_mowas_warning_is_read_as_cap() {
    let alert = nina::warning(&testdata("nina/warnings/mow.DE-NI-RV-W001-20261203-1-000.json")).unwrap();
    assert_eq!(alert.identifier, "mow.DE-NI-RV-W001-20261203-1-000");
    assert_eq!(alert.sender, "DE-NI-RV-W001");
    assert_eq!(alert.reference_key(), "DE-NI-RV-W001,mow.DE-NI-RV-W001-20261203-1-000,2026-12-03T07:45:00+01:00");
    assert_eq!((alert.status, alert.msg_type), (Status::Actual, MsgType::Alert));
    assert_eq!(alert.codes, ["DVN:1", "medien_ueberregional", "nina"]);
    let info = &alert.infos[0];
    assert_eq!(info.categories, [Category::Met, Category::Geo]);
    assert_eq!((info.severity, info.urgency), (Severity::Severe, Urgency::Immediate));
    assert!(info.headline.as_deref().unwrap().contains("Pegel Riverton über 4,20 m"));
    assert_eq!(info.areas[0].geocodes[0].value, "031590001000");
    assert_eq!(info.parameters.len(), 2);
}

#[test]
fn a_bad_mowas_warning_names_the_member() {
    let e = nina::warning(&testdata("nina/warnings/mow.DE-NI-RV-W002-20261203-2-000.json")).unwrap_err();
    assert_eq!(e.at, "/info/0/severity", "{e}");
    assert!(e.message.contains("\"Sehr hoch\""), "{e}");
    let e = nina::warning(r#"{"identifier": "x", "sender": "y"}"#).unwrap_err();
    assert_eq!(e.to_string(), "/sent: is required and missing");
    let e = nina::warning("{\n  \"identifier\": ,\n}").unwrap_err();
    assert_eq!(e.at, "line 2", "{e}");
    let update = r#"{"identifier": "u", "sender": "s", "sent": "2026-12-03T07:45:00+01:00", "status": "Actual",
        "msgType": "Update", "scope": "Public", "info": []}"#;
    assert_eq!(nina::warning(update).unwrap_err().at, "/references");
}

fn gauge_template() -> BTreeMap<String, String> {
    [
        ("identifier", "gauge-{{ station.id }}-{{ time[:16] | replace(':', '') }}"),
        ("sender", "gauges@riverton.example"),
        ("sent", "{{ time }}"),
        ("category", "Met Geo"),
        ("event", "Flood Warning"),
        ("urgency", "Immediate"),
        ("severity", "{% if level_cm >= 420 %}Severe{% elif level_cm >= 380 %}Moderate{% else %}Minor{% endif %}"),
        ("certainty", "Observed"),
        ("headline", "River {{ station.river }} at {{ level_cm }} cm at {{ station.name }}"),
        ("area_desc", "{{ station.name }}"),
        ("circle", "{{ station.lat }},{{ station.lon }} 2"),
        ("geocode", "AGS={{ station.ags }}"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[test]
fn a_template_maps_a_gauge_reading() {
    let t = AlertTemplate::compile(&gauge_template()).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&testdata("webhook/gauge-reading.json")).unwrap();
    let alert = t.render(&doc, Utc::now()).unwrap();
    assert_eq!(alert.identifier, "gauge-RIV-07-2026-12-03T1015");
    assert_eq!(alert.reference_key(), "gauges@riverton.example,gauge-RIV-07-2026-12-03T1015,2026-12-03T10:15:00+01:00");
    let info = &alert.infos[0];
    assert_eq!(info.severity, Severity::Severe);
    assert_eq!(info.categories, [Category::Met, Category::Geo]);
    assert_eq!(info.headline.as_deref(), Some("River Aller at 431 cm at Riverton bridge"));
    assert_eq!(info.areas[0].circles[0].radius_km, 2.0);
    assert_eq!(info.areas[0].geocodes[0].value, "031590001");

    let mut low = doc.clone();
    low["level_cm"] = 390.into();
    assert_eq!(t.render(&low, Utc::now()).unwrap().infos[0].severity, Severity::Moderate);
}

#[test]
fn template_errors_name_the_field() {
    let doc: serde_json::Value = serde_json::from_str(&testdata("webhook/gauge-reading.json")).unwrap();
    let t = AlertTemplate::compile(&gauge_template()).unwrap();
    let mut missing = doc.clone();
    missing["station"].as_object_mut().unwrap().remove("river");
    let e: JsonError = t.render(&missing, Utc::now()).unwrap_err();
    assert_eq!(e.at, "template field headline", "{e}");

    let mut fields = gauge_template();
    fields.insert("severity".into(), "Very bad".into());
    let e = AlertTemplate::compile(&fields).unwrap().render(&doc, Utc::now()).unwrap_err();
    assert_eq!(e.at, "template field severity");
    assert!(e.message.contains("rendered \"Very bad\""), "{e}");

    let mut fields = gauge_template();
    fields.insert("headline".into(), "line one\n{{ station.name ".into());
    let e = AlertTemplate::compile(&fields).unwrap_err();
    assert_eq!((e.field.as_str(), e.line), ("headline", Some(2)), "{e}");
    let mut fields = gauge_template();
    fields.insert("colour".into(), "red".into());
    assert!(AlertTemplate::compile(&fields).unwrap_err().message.starts_with("unknown field"));
    let mut fields = gauge_template();
    fields.remove("event");
    assert_eq!(AlertTemplate::compile(&fields).unwrap_err().to_string(), "template field event: is required");
}

#[test]
fn the_config_says_where_a_template_is_wrong() {
    let text = r#"homeserver = "http://127.0.0.1:8008"
password = "pw"
data_dir = "/tmp/x"
policy = "/tmp/p.toml"

[[source]]
name = "river-gauges"
kind = "json_post"
hmac_secret = "k"

[source.template]
identifier = "g-{{ id }}"
sender = "gauges@riverton.example"
category = "Met"
event = "Flood Warning"
urgency = "Immediate"
severity = "{% if level > 4 %}Severe{% else %}Moderate"
certainty = "Observed"
"#;
    let e = crate::Config::parse(text, Path::new("bridge.toml")).unwrap_err();
    assert!(e.to_string().starts_with("bridge.toml:17: source \"river-gauges\": template field severity"), "{e}");
    let ok = text.replace("Moderate\"", "Moderate{% endif %}\"");
    crate::Config::parse(&ok, Path::new("bridge.toml")).expect("valid");
    let unsigned = ok.replace("hmac_secret = \"k\"\n", "");
    let e = crate::Config::parse(&unsigned, Path::new("bridge.toml")).unwrap_err();
    assert!(e.to_string().contains("needs hmac_secret or bearer_secret"), "{e}");
}
