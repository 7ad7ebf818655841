//! Cerebrium (seed 003): the documented curl request to the documented callback. The seed's
//! body is sent as written plus a 64×64 size and 4 steps, so the tiny model answers in seconds
//! (the body exactly as written is `webhook-service/tests/it/cerebrium.rs`'s, on a fake server).

use serde_json::{Value, json};

use crate::harness::{MODEL, Product, http};

#[tokio::test]
async fn seed_request_to_callback() {
    let product = Product::start().await;
    let key = product.named_key("cerebrium-user").await;
    let hook = product.receiver.url("/cerebrium");
    // Seed 003's curl: `Authorization: <YOUR_PUBLIC_API_KEY>` (no scheme) and this body.
    let response = http()
        .post(product.url(&format!("/{MODEL}/predict")))
        .header("Authorization", &key)
        .header("Content-Type", "application/json")
        .body(json!({"prompt": "An astronaut riding a horse in space", "webhook_endpoint": hook, "width": 64, "height": 64, "steps": 4}).to_string())
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let reply: Value = response.json().await.unwrap();
    let run_id = reply["run_id"].as_str().unwrap().to_owned();
    assert_eq!(
        reply["message"],
        "We will return the images to the endpoint provided when the task is complete."
    );

    let callback = product.receiver.callback("/cerebrium").await;
    let body = callback.body.as_object().unwrap();
    let mut keys: Vec<_> = body.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["message", "result", "run_id", "run_time_ms"],
        "{}",
        callback.body
    );
    assert_eq!(body["run_id"], run_id.as_str());
    assert_eq!(body["message"], "Successfully generated images");
    assert!(body["run_time_ms"].as_f64().unwrap() > 0.0);
    let png = base64_png(&body["result"][0]);
    assert!(png.starts_with(b"\x89PNG"), "result[0] is not a base64 PNG");
}

fn base64_png(value: &Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(value.as_str().expect("a base64 string"))
        .unwrap()
}
