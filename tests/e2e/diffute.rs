//! Diffute (seed 002): the documented inference request (its JSON braces restored, its
//! `webhook` pointed at our receiver, its sizes 64×64 and 2 images a prompt so the tiny model
//! answers in seconds; the request exactly as written is `webhook-service/tests/it/diffute.rs`'s,
//! on a fake server) to one callback keyed by every prompt name, with the secret sent back in
//! the `Authentication` header the seed names.

use serde_json::{Value, json};

use crate::harness::{Product, http};

#[tokio::test]
async fn seed_request_to_callback() {
    let product = Product::start().await;
    let key = product.named_key("diffute-user").await;
    let hook = product.receiver.url("/diffute");
    let prompt = |name: &str, prompt: &str, style: &str| json!({"name": name, "prompt": prompt, "num_images": 2, "height": 64, "width": 64, "style": style});
    let body = json!({
        "prompts": [
            prompt("Ansel_Adams", "A series of black and white photographs capturing the beauty and grandeur of Yosemite National Park", "photography in the style of Ansel Adams"),
            prompt("Henri_Rousseau", "A painting of a lush jungle scene with a variety of exotic plants and animals", "painting in the style of Henri Rousseau"),
            prompt("Rachel_Ruysch", "Still life painting featuring a variety of flowers and plants found in a garden", "painting in the style of Rachel Ruysch"),
        ],
        "webhook": hook,
        "secret": "4f986e48-0129-480e-996a-728ea57c020c",
        "pretrained_model_name": "stabilityai/stable-diffusion-xl-base-1.0",
        "name": "Houston"
    });
    let response = http()
        .put(product.url("/acme/yosemite/media/inference"))
        .header("x-api-key", &key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let reply: Value = response.json().await.unwrap();
    let job_id = reply["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{reply}"))
        .to_owned();

    let callback = product.receiver.callback("/diffute").await;
    assert_eq!(
        callback.header("authentication"),
        Some("Bearer 4f986e48-0129-480e-996a-728ea57c020c")
    );
    assert_eq!(
        callback.header("authorization"),
        Some("Bearer 4f986e48-0129-480e-996a-728ea57c020c")
    );
    let manifest = callback.body.as_object().unwrap();
    let mut keys: Vec<_> = manifest.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "Ansel_Adams",
            "Henri_Rousseau",
            "Rachel_Ruysch",
            "job_id",
            "name"
        ],
        "{}",
        callback.body
    );
    assert_eq!(manifest["name"], "Houston");
    assert_eq!(manifest["job_id"], job_id.as_str());
    for name in ["Ansel_Adams", "Henri_Rousseau", "Rachel_Ruysch"] {
        let urls = manifest[name].as_array().unwrap();
        assert_eq!(urls.len(), 2, "{name}");
        let png = http()
            .get(urls[0].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(
            png.starts_with(b"\x89PNG"),
            "{name}'s first URL is not a PNG"
        );
    }
    assert!(
        !callback.body.to_string().contains("4f986e48"),
        "the secret is in the body"
    );
}
