//! Thumbnails as a phone sees them: a 20 MB photo from the field costs a preview under 100 kB,
//! sizes and methods follow the spec, a file that is not an image is never sent as its own
//! "thumbnail", and another node's image is thumbnailed over federation.

use std::io::Cursor;

use image::{DynamicImage, GenericImageView, ImageBuffer, ImageFormat, Rgb};
use serde_json::Value;
use tocsin_node::NodeHandle;

use crate::{
    api::Api,
    fed::{self, PASSWORD},
};

/// A photo-like image: smooth gradients with sensor noise, as a lossless PNG of over 20 MB.
fn field_photo() -> Vec<u8> {
    let mut seed: u32 = 0x1234_5678;
    let mut noise = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        (seed % 64) as i32 - 32
    };
    let img = ImageBuffer::from_fn(4000, 3000, |x, y| {
        let base = [(x * 255 / 4000) as i32, (y * 255 / 3000) as i32, ((x + y) % 256) as i32];
        Rgb(base.map(|c| (c + noise()).clamp(0, 255) as u8))
    });
    let mut out = Vec::new();
    DynamicImage::ImageRgb8(img).write_to(&mut Cursor::new(&mut out), ImageFormat::Png).expect("png");
    out
}

async fn upload(node: &NodeHandle, token: &str, bytes: Vec<u8>, content_type: &str) -> String {
    let resp = reqwest::Client::new()
        .post(format!("{}/_matrix/media/v3/upload", node.base_url()))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    body["content_uri"].as_str().expect("content_uri").trim_start_matches("mxc://").to_owned()
}

/// Status, content type and body of a thumbnail request (`server/id` from an mxc URI).
async fn thumbnail(node: &NodeHandle, token: &str, mxc: &str, query: &str) -> (u16, String, Vec<u8>) {
    let resp = reqwest::Client::new()
        .get(format!("{}/_matrix/client/v1/media/thumbnail/{mxc}?{query}", node.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("thumbnail request");
    let status = resp.status().as_u16();
    let kind = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    (status, kind, resp.bytes().await.expect("body").to_vec())
}

fn dims(bytes: &[u8]) -> (u32, u32) {
    image::load_from_memory(bytes).expect("an image").dimensions()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_photo_gets_small_thumbnails_of_the_sizes_asked_for() {
    let (_dir, a, b) = fed::two_nodes("thumbs-a.test", "thumbs-b.test").await;
    let api = Api::new(&a);
    let alice = api.user(&a, "alice").await;
    let photo = field_photo();
    assert!(photo.len() > 20_000_000, "the photo is over 20 MB: {}", photo.len());
    let mxc = upload(&a, &alice, photo, "image/png").await;

    let (status, kind, body) = thumbnail(&a, &alice, &mxc, "width=800&height=600&method=scale").await;
    assert_eq!((status, kind.as_str()), (200, "image/jpeg"));
    assert!(body.len() < 100_000, "a preview costs under 100 kB, not {} bytes", body.len());
    assert_eq!(dims(&body), (800, 600), "scale fits the box and keeps 4:3");
    println!("thumbnail (800x600) of a photo of over 20 MB: {} bytes", body.len());

    // Scale keeps the aspect ratio: a wide box gets the full height.
    let (_, _, body) = thumbnail(&a, &alice, &mxc, "width=320&height=100&method=scale").await;
    assert_eq!(dims(&body), (320, 240), "the recommended 320x240 box, never smaller than asked");
    // Crop fills the box exactly; a small square maps to the recommended 96x96.
    let (_, _, body) = thumbnail(&a, &alice, &mxc, "width=50&height=50&method=crop").await;
    assert_eq!(dims(&body), (96, 96));
    let (_, _, body) = thumbnail(&a, &alice, &mxc, "width=200&height=100&method=crop").await;
    assert_eq!(dims(&body), (200, 100), "crop gives the shape asked for");
    let (status, _, _) = thumbnail(&a, &alice, &mxc, "width=0&height=10").await;
    assert_eq!(status, 400, "a zero size is refused");

    // Not an image: a clear error, never the file itself.
    let secret = b"minutes of the crisis staff meeting".to_vec();
    let doc = upload(&a, &alice, secret.clone(), "image/png").await;
    let (status, _, body) = thumbnail(&a, &alice, &doc, "width=96&height=96&method=crop").await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let error: Value = serde_json::from_slice(&body).expect("a Matrix error");
    assert!(error["error"].as_str().unwrap_or("").contains("not an image"), "{error}");
    assert!(!body.windows(secret.len()).any(|w| w == secret.as_slice()), "the file is not sent");

    // Another node's image, over federation.
    b.services.users.create_account("bob", Some(PASSWORD), None, false).await.expect("bob");
    let bob = Api::new(&b).login("bob").await;
    let (status, kind, body) = thumbnail(&b, &bob, &mxc, "width=640&height=480&method=scale").await;
    assert_eq!((status, kind.as_str()), (200, "image/jpeg"), "{}", String::from_utf8_lossy(&body));
    assert_eq!(dims(&body), (640, 480));
}
