//! The bridge's HTTP sources against a real HTTP server on loopback and a real node: an Atom
//! feed of CAP documents and the German warning API's JSON (MoWaS map data list and warning
//! documents) polled with `If-None-Match` / `If-Modified-Since`, a 304 taking nothing in, the
//! interval kept; and a river gauge's JSON reading posted to a webhook, mapped by the source's
//! template. Each alert lands as an alarm in the room the policy routes it to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::bridge::{admin_apply, alarms_in, fixture, metric, metrics, officer_in_rooms, policy, room_id, wait_for};
use crate::common;

/// What the upstream server was asked.
#[derive(Debug, Clone)]
struct Hit {
    path: String,
    if_none_match: Option<String>,
    if_modified_since: Option<String>,
    status: u16,
    at: Instant,
}

/// Documents by path, each with its ETag; every request logged.
#[derive(Default)]
struct Upstream {
    files: Mutex<HashMap<String, (String, String)>>,
    hits: Mutex<Vec<Hit>>,
}

const LAST_MODIFIED: &str = "Thu, 03 Dec 2026 08:00:00 GMT";

impl Upstream {
    fn put(&self, path: &str, etag: &str, body: String) {
        self.files.lock().unwrap().insert(path.to_owned(), (format!("\"{etag}\""), body));
    }

    fn hits(&self, path: &str) -> Vec<Hit> {
        self.hits.lock().unwrap().iter().filter(|h| h.path == path).cloned().collect()
    }
}

async fn serve_file(State(up): State<Arc<Upstream>>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_owned();
    let text = |name| headers.get(name).and_then(|v: &header::HeaderValue| v.to_str().ok()).map(str::to_owned);
    let file = up.files.lock().unwrap().get(&path).cloned();
    let (status, resp) = match file {
        None => (404, StatusCode::NOT_FOUND.into_response()),
        Some((etag, _)) if text(header::IF_NONE_MATCH).as_deref() == Some(etag.as_str()) => {
            (304, StatusCode::NOT_MODIFIED.into_response())
        }
        Some((etag, body)) => {
            (200, ([(header::ETAG, etag.as_str()), (header::LAST_MODIFIED, LAST_MODIFIED)], body).into_response())
        }
    };
    up.hits.lock().unwrap().push(Hit {
        path,
        if_none_match: text(header::IF_NONE_MATCH),
        if_modified_since: text(header::IF_MODIFIED_SINCE),
        status,
        at: Instant::now(),
    });
    resp
}

fn atom(base: &str, docs: &[&str]) -> String {
    let entries: String = docs
        .iter()
        .map(|d| {
            format!(
                "<entry><id>urn:test:{d}</id><title>{d}</title><updated>2026-12-03T08:00:00Z</updated>\
                 <link rel=\"alternate\" type=\"application/cap+xml\" href=\"{base}/cap/docs/{d}.xml\"/></entry>"
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><feed xmlns=\"http://www.w3.org/2005/Atom\"><id>urn:test:feed</id>\
         <title>Warnings</title><updated>2026-12-03T08:00:00Z</updated>{entries}</feed>"
    )
}

fn nina(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bridge/testdata").join(rel);
    std::fs::read_to_string(path).unwrap()
}

fn gauge_reading() -> Value {
    serde_json::from_str(&nina("webhook/gauge-reading.json")).unwrap()
}

const INTERVAL_MS: u64 = 300;

fn config(dir: &std::path::Path, homeserver: &str, policy: &std::path::Path, upstream: &str) -> String {
    format!(
        r#"homeserver = "{homeserver}"
password = "bridge-secret-pw"
data_dir = "{data}"
policy = "{policy}"
listen = "127.0.0.1:0"

[[source]]
name = "national"
kind = "poll"
url = "{upstream}/cap/feed.atom"
interval_ms = {INTERVAL_MS}

[[source]]
name = "mowas"
kind = "poll"
url = "{upstream}/api31/mowas/mapData.json"
interval_ms = {INTERVAL_MS}

[[source]]
name = "river-gauges"
kind = "json_post"
hmac_secret = "gauge-key"

[source.template]
identifier = "gauge-{{{{ station.id }}}}-{{{{ time[:16] | replace(':', '') }}}}"
sender = "gauges@riverton.example"
sent = "{{{{ time }}}}"
category = "Met Geo"
event = "Flood Warning"
urgency = "Immediate"
severity = "{{% if level_cm >= 420 %}}Severe{{% else %}}Moderate{{% endif %}}"
certainty = "Observed"
headline = "River {{{{ station.river }}}} at {{{{ level_cm }}}} cm at {{{{ station.name }}}}"
instruction = "Rising {{{{ trend_cm_per_h }}}} cm an hour."
area_desc = "{{{{ station.name }}}}"
circle = "{{{{ station.lat }}}},{{{{ station.lon }}}} 2"
"#,
        data = dir.join("bridge-data").display(),
        policy = policy.display(),
    )
}

async fn post_hook(bridge: &str, body: &Value, signature: Option<String>) -> (u16, Value) {
    let body = body.to_string();
    let mut req = reqwest::Client::new().post(format!("{bridge}/hook/river-gauges")).body(body.clone());
    if let Some(sig) = signature {
        req = req.header("X-Tocsin-Signature", sig);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn polled_feeds_mowas_json_and_webhooks_become_alarms() {
    let dir = tempfile::tempdir().unwrap();
    let policy_file = dir.path().join("policy.toml");
    // MoWaS warnings name their area by regional key; #flood-ops takes the Riverton lowlands'.
    let policy = policy().replace(
        "polygons = [\"52.0,13.0 52.0,13.4 52.2,13.4 52.2,13.0 52.0,13.0\"]",
        "polygons = [\"52.0,13.0 52.0,13.4 52.2,13.4 52.2,13.0 52.0,13.0\"]\ngeocodes = [\"SHN=031590001000\"]",
    );
    std::fs::write(&policy_file, policy).unwrap();
    let node = common::start(&dir.path().join("node"), |c| c.policy = Some(policy_file.clone())).await;
    admin_apply(&node).await;
    let (officer, seen) = officer_in_rooms(&node).await;
    let flood = room_id(&officer, "flood-ops").await;
    let hazmat = room_id(&officer, "hazmat").await;

    // The upstream server, on loopback.
    let up = Arc::new(Upstream::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(serve_file).with_state(up.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    up.put("/cap/feed.atom", "feed-1", atom(&base, &["flood", "chem"]));
    up.put("/cap/docs/flood.xml", "f", fixture("10-flood-alert.xml"));
    up.put("/cap/docs/chem.xml", "c", fixture("30-chemical-release.xml"));
    up.put("/cap/docs/storm.xml", "s", fixture("20-storm-bilingual.xml"));
    up.put("/api31/mowas/mapData.json", "map-1", nina("nina/mapData.json"));
    for id in
        ["mow.DE-NI-RV-W001-20261203-1-000", "mow.DE-NW-BN-SE030-20261203-30-000", "mow.DE-NI-RV-W002-20261203-2-000"]
    {
        up.put(&format!("/api31/warnings/{id}.json"), id, nina(&format!("nina/warnings/{id}.json")));
    }

    let text = config(dir.path(), &node.base_url(), &policy_file, &base);
    let config = tocsin_bridge::Config::parse(&text, std::path::Path::new("bridge.toml")).expect("config is valid");
    let bridge = tocsin_bridge::start(config).await.expect("bridge starts");
    let bridge_url = format!("http://{}", bridge.http_addr.unwrap());
    let body = |s: &crate::bridge::Seen| s.content["body"].as_str().unwrap_or("").to_owned();
    let has = |room: &str, text: &str| alarms_in(&seen, room).iter().any(|s| body(s).contains(text));

    // The feed's two CAP documents and the MoWaS flood warning (German) arrive.
    wait_for(&officer, 30, || {
        (has(&flood, "River Aller above 4.2 m")
            && has(&hazmat, "Chlorine leak")
            && has(&flood, "Pegel Riverton über 4,20 m"))
        .then_some(())
    })
    .await;
    let mowas = alarms_in(&seen, &flood).into_iter().find(|s| body(s).contains("Pegel Riverton")).unwrap();
    assert!(mowas.encrypted);
    assert_eq!(mowas.content["org.tocsin.alarm"]["cap_identifier"], "mow.DE-NI-RV-W001-20261203-1-000");
    assert_eq!(mowas.content["org.tocsin.alarm"]["level"], "critical", "Severe + Immediate");
    assert!(body(&mowas).contains("Verlassen Sie die Niederung jetzt"), "{}", body(&mowas));

    // The webhook: a signed reading becomes an alarm; unsigned is refused; a reading the
    // template cannot map is refused naming the field; the same reading again is a duplicate.
    let reading = gauge_reading();
    let sign = |v: &Value| Some(tocsin_bridge::sources::push::sign("gauge-key", v.to_string().as_bytes()));
    let (status, answer) = post_hook(&bridge_url, &reading, sign(&reading)).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(post_hook(&bridge_url, &reading, None).await.0, 401);
    assert_eq!(post_hook(&bridge_url, &reading, Some("sha256=00".into())).await.0, 401);
    let mut bad = reading.clone();
    bad["station"].as_object_mut().unwrap().remove("river");
    let (status, answer) = post_hook(&bridge_url, &bad, sign(&bad)).await;
    assert_eq!((status, answer["at"].as_str()), (400, Some("template field headline")), "{answer}");
    let gauge = wait_for(&officer, 20, || {
        alarms_in(&seen, &flood).into_iter().find(|s| body(s).contains("River Aller at 431 cm at Riverton bridge"))
    })
    .await;
    assert_eq!(gauge.content["org.tocsin.alarm"]["level"], "critical", "{}", body(&gauge));
    assert!(body(&gauge).contains("Rising 12.5 cm an hour."), "{}", body(&gauge));
    let (status, answer) = post_hook(&bridge_url, &reading, sign(&reading)).await;
    assert_eq!((status, answer["outcome"].as_str()), (202, Some("Duplicate")), "{answer}");

    // Polls go on with the validators; every answer is a 304, and nothing is taken in.
    let before = metrics(&bridge).await;
    tokio::time::sleep(Duration::from_millis(6 * INTERVAL_MS)).await;
    let after = metrics(&bridge).await;
    assert_eq!(metric(&before, "alerts_in_total"), metric(&after, "alerts_in_total"), "{after}");
    let feed_hits = up.hits("/cap/feed.atom");
    assert!(feed_hits.len() >= 4, "{feed_hits:#?}");
    assert_eq!(feed_hits[0].if_none_match, None, "the first request has no validators");
    for h in &feed_hits[1..] {
        assert_eq!(h.if_none_match.as_deref(), Some("\"feed-1\""), "{h:?}");
        assert_eq!(h.if_modified_since.as_deref(), Some(LAST_MODIFIED), "{h:?}");
        assert_eq!(h.status, 304);
    }
    for h in up.hits("/api31/mowas/mapData.json").iter().skip(1) {
        assert_eq!((h.if_none_match.as_deref(), h.status), (Some("\"map-1\""), 304), "{h:?}");
    }
    // The interval is kept: never two polls closer than it, and no more than it allows.
    let gaps: Vec<Duration> = feed_hits.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps.iter().all(|g| *g >= Duration::from_millis(INTERVAL_MS - 5)), "{gaps:?}");
    let span = feed_hits.last().unwrap().at - feed_hits[0].at;
    assert!(
        feed_hits.len() as u128 <= span.as_millis() / INTERVAL_MS as u128 + 1,
        "{} polls in {span:?}",
        feed_hits.len()
    );
    eprintln!(
        "feed polled {} times in {span:.2?}; gaps {:?} .. {:?}",
        feed_hits.len(),
        gaps.iter().min(),
        gaps.iter().max()
    );

    // The feed and the list change: only the new documents are fetched. The new MoWaS warning
    // is malformed and is quarantined with the member that is wrong.
    up.put("/cap/feed.atom", "feed-2", atom(&base, &["flood", "chem", "storm"]));
    let mut list: Value = serde_json::from_str(&nina("nina/mapData.json")).unwrap();
    list.as_array_mut().unwrap().push(serde_json::json!({"id": "mow.DE-NI-RV-W002-20261203-2-000", "version": 1}));
    up.put("/api31/mowas/mapData.json", "map-2", list.to_string());
    wait_for(&officer, 20, || has(&flood, "Gale-force").then_some(())).await;
    let quarantine = dir.path().join("bridge-data/quarantine");
    common::eventually_until(10, || async { std::fs::read_dir(&quarantine).map(|d| d.count() >= 4).unwrap_or(false) })
        .await;
    let notes: Vec<String> = std::fs::read_dir(&quarantine)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".error.txt"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(
        notes.iter().any(|n| n.contains("W002") && n.contains("/info/0/severity") && n.contains("Sehr hoch")),
        "{notes:#?}"
    );
    assert!(notes.iter().any(|n| n.contains("template field headline")), "{notes:#?}");
    for path in ["/cap/docs/flood.xml", "/cap/docs/chem.xml", "/cap/docs/storm.xml"] {
        assert_eq!(up.hits(path).len(), 1, "{path} fetched once");
    }
    for id in ["mow.DE-NI-RV-W001-20261203-1-000", "mow.DE-NW-BN-SE030-20261203-30-000"] {
        assert_eq!(up.hits(&format!("/api31/warnings/{id}.json")).len(), 1, "{id} fetched once");
    }
    // Posted: the feed's flood and storm, the MoWaS flood and the gauge in #flood-ops, the
    // chlorine leak in #hazmat. The Bonn power cut is routed nowhere.
    common::sync(&officer).await;
    let m = metrics(&bridge).await;
    assert_eq!(metric(&m, "alerts_posted_total"), 5, "{m}");
    assert_eq!(metric(&m, "alerts_unrouted_total"), 1, "{m}");
    assert_eq!(metric(&m, "alerts_quarantined_total"), 2, "{m}");
    assert!(!has(&flood, "Stromausfall") && !has(&hazmat, "Stromausfall"));

    bridge.stop().await;
    node.shutdown().await;
}
