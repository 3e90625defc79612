//! URL previews against a real web server on 127.0.0.1: a page on the node's allow list is
//! previewed (title, description, its image kept in the media repository as `mxc://`); anything
//! else is refused without being fetched; the feature off answers as for a missing endpoint.

use std::{
    io::Cursor,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{
    extract::{Path, State},
    http::header,
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb};
use matrix_sdk::ruma::api::client::authenticated_media::get_media_preview::v1::Request as PreviewRequest;
use serde_json::Value;

use crate::{
    api::{Api, enc},
    common::{self, start, user},
};

const PAGE: &str = r#"<!doctype html>
<html><head>
<title>ignored: og:title wins</title>
<meta property="og:title" content="Elbe at Dresden: 7.2 m and rising">
<meta property="og:description" content="Evacuate the low streets of Pieschen &amp; Kaditz.">
<meta property="og:image" content="/images/gauge.png">
<meta property="og:type" content="article">
</head><body><p>Details follow.</p></body></html>"#;

/// A page whose image is not on the allow list, and which has no OpenGraph title.
const PAGE_WITH_OUTSIDE_IMAGE: &str = r#"<html><head><title>Shelters open</title>
<meta name="description" content="Gym halls in Mickten and Trachau.">
<meta property="og:image" content="/private/secret.png"></head></html>"#;

/// The web server: what it serves, and which paths were asked for.
#[derive(Clone)]
struct Site {
    png: Arc<Vec<u8>>,
    requests: Arc<Mutex<Vec<String>>>,
    page_hits: Arc<AtomicUsize>,
}

async fn pages(State(site): State<Site>, Path(name): Path<String>) -> Response {
    site.requests.lock().unwrap().push(format!("/pages/{name}"));
    match name.as_str() {
        "alert.html" => {
            site.page_hits.fetch_add(1, Ordering::SeqCst);
            ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
        }
        "shelters.html" => ([(header::CONTENT_TYPE, "text/html")], PAGE_WITH_OUTSIDE_IMAGE).into_response(),
        "moved.html" => Redirect::temporary("/private/page.html").into_response(),
        _ => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

async fn images(State(site): State<Site>, Path(name): Path<String>) -> Response {
    site.requests.lock().unwrap().push(format!("/images/{name}"));
    ([(header::CONTENT_TYPE, "image/png")], site.png.as_ref().clone()).into_response()
}

async fn private(State(site): State<Site>, Path(name): Path<String>) -> Response {
    site.requests.lock().unwrap().push(format!("/private/{name}"));
    ([(header::CONTENT_TYPE, "text/html")], "<title>internal</title>").into_response()
}

fn png() -> Vec<u8> {
    let img = ImageBuffer::from_fn(8, 6, |x, y| Rgb([(x * 30) as u8, (y * 40) as u8, 200]));
    let mut out = Vec::new();
    DynamicImage::ImageRgb8(img).write_to(&mut Cursor::new(&mut out), ImageFormat::Png).expect("png");
    out
}

async fn serve_site() -> (String, Site) {
    let site = Site { png: Arc::new(png()), requests: Arc::default(), page_hits: Arc::default() };
    let app = axum::Router::new()
        .route("/pages/{name}", get(pages))
        .route("/images/{name}", get(images))
        .route("/private/{name}", get(private))
        .with_state(site.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("the site binds");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("127.0.0.1:{}", addr.port()), site)
}

async fn preview(api: &Api, token: &str, url: &str) -> (u16, Value) {
    api.get(&format!("/_matrix/client/v1/media/preview_url?url={}", enc(url)), Some(token)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_listed_page_is_previewed_and_nothing_else_is_fetched() {
    let (host, site) = serve_site().await;
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| {
        c.url_previews.enabled = true;
        c.url_previews.allow = vec![
            format!("http://{host}/pages/"),
            format!("http://{host}/images/"),
            // Named, not as an address: it resolves to loopback, which the outbound rules refuse.
            format!("localhost:{}", host.rsplit(':').next().unwrap()),
        ];
    })
    .await;
    let alice = user(&node, "alice").await;
    let api = Api::new(&node);
    let token = alice.access_token().unwrap();

    // A stock client asks for the preview.
    let page = format!("http://{host}/pages/alert.html");
    let answer = alice.send(PreviewRequest::new(page.clone())).await.expect("the preview");
    let data: Value = serde_json::from_str(answer.data.expect("preview data").get()).unwrap();
    assert_eq!(data["og:title"], "Elbe at Dresden: 7.2 m and rising", "{data}");
    assert_eq!(data["og:description"], "Evacuate the low streets of Pieschen & Kaditz.");
    assert_eq!(data["og:type"], "article");
    assert_eq!(data["og:image:type"], "image/png");
    assert_eq!(data["matrix:image:size"], site.png.len(), "{data}");
    let mxc = data["og:image"].as_str().expect("og:image");
    let media = mxc.strip_prefix("mxc://").expect("an mxc URI, not the site's URL");
    let response = reqwest::Client::new()
        .get(format!("{}/_matrix/client/v1/media/download/{media}", node.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), site.png.as_slice(), "the site's image, kept by the node");

    // Asked again (also on the legacy path), the answer comes from the cache.
    let (status, again) = api.get(&format!("/_matrix/media/v3/preview_url?url={}", enc(&page)), Some(&token)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["og:title"], data["og:title"]);
    assert_eq!(site.page_hits.load(Ordering::SeqCst), 1, "fetched once");

    // Without OpenGraph: the title and description; an image outside the list is left out.
    let (status, shelters) = preview(&api, &token, &format!("http://{host}/pages/shelters.html")).await;
    assert_eq!(status, 200, "{shelters}");
    assert_eq!(shelters["og:title"], "Shelters open");
    assert_eq!(shelters["og:description"], "Gym halls in Mickten and Trachau.");
    assert!(shelters.get("og:image").is_none(), "{shelters}");

    // Not on the list: refused, naming the rule, and never fetched.
    let (status, refused) = preview(&api, &token, &format!("http://{host}/private/page.html")).await;
    assert_eq!((status, refused["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("url_previews.allow"), "{refused}");
    for url in ["http://example.org/", "file:///etc/passwd", &format!("http://user@{host}/pages/alert.html")] {
        let (status, refused) = preview(&api, &token, url).await;
        assert_eq!(status, 403, "{url}: {refused}");
    }
    // A listed page that redirects off the list is not followed.
    let (status, moved) = preview(&api, &token, &format!("http://{host}/pages/moved.html")).await;
    assert_eq!(status, 502, "{moved}");
    assert!(moved["error"].as_str().unwrap().contains("url_previews.allow"), "{moved}");
    // A listed name that resolves to loopback is refused by the outbound rules.
    let port = host.rsplit(':').next().unwrap();
    let (status, inward) = preview(&api, &token, &format!("http://localhost:{port}/pages/alert.html")).await;
    assert_eq!(status, 502, "{inward}");
    assert!(inward["error"].as_str().unwrap().contains("outbound_ip_allow"), "{inward}");

    let requests = site.requests.lock().unwrap().clone();
    assert!(!requests.iter().any(|r| r.starts_with("/private/")), "the site was asked for {requests:?}");
    assert_eq!(site.page_hits.load(Ordering::SeqCst), 1, "localhost never reached the site");
    node.shutdown().await;
}

#[tokio::test]
async fn previews_are_off_by_default() {
    let (host, site) = serve_site().await;
    let dir = tempfile::tempdir().unwrap();
    let node = common::start(dir.path(), |_| {}).await;
    let api = Api::new(&node);
    let token = api.user(&node, "bob").await;
    let (status, off) = preview(&api, &token, &format!("http://{host}/pages/alert.html")).await;
    assert_eq!((status, off["errcode"].as_str()), (404, Some("M_UNRECOGNIZED")), "{off}");
    let (status, _) = preview(&api, "not-a-token", &format!("http://{host}/pages/alert.html")).await;
    assert_eq!(status, 401, "a token is needed first");
    assert!(site.requests.lock().unwrap().is_empty());
    node.shutdown().await;
}
