//! Leonardo (seed 004): the callback URL and callback key belong to the API key; a generation
//! made with `POST /api/rest/v1/generations` is delivered with `authorization: Bearer <callback
//! key>` and carries every field of the seed's sample callback
//! (`webhook-service/tests/fixtures/seeds/leonardo.json`, transcribed from the seed), ids as
//! UUIDs and no secret. The key's URL is plain http to the local receiver here (keys made by
//! `keys create` must be https; this test makes its key through the library, and the https path
//! is `webhook-service/tests/it/leonardo.rs`'s).

use std::collections::BTreeSet;

use serde_json::{Value, json};
use webhook_service::auth::KeySpec;
use webhook_service::domain::{KeyWebhook, Secret};

use crate::harness::{Product, http};

const SEED: &str = include_str!("../../webhook-service/tests/fixtures/seeds/leonardo.json");

/// Every object key path of `value` (`data.object.images[].id`).
fn paths(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let path = format!("{prefix}{k}");
                out.insert(path.clone());
                paths(v, &format!("{path}."), out);
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|item| paths(item, &format!("{}[].", prefix.trim_end_matches('.')), out)),
        _ => {}
    }
}

#[tokio::test]
async fn generation_to_callback_with_every_field_of_the_sample() {
    let product = Product::start().await;
    let hook = product.receiver.url("/leonardo");
    let webhook = KeyWebhook {
        url: hook,
        secret: Some(Secret::new("abcd-callback-key")),
    };
    let key = product
        .key(KeySpec {
            name: "webhook with key".into(),
            webhook: Some(webhook),
            ..KeySpec::default()
        })
        .await;
    let body = json!({"prompt": "An oil painting of a cat", "width": 64, "height": 64, "num_images": 1, "num_inference_steps": 10});
    let created: Value = http()
        .post(product.url("/api/rest/v1/generations"))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["sdGenerationJob"]["generationId"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();

    let callback = product.receiver.callback("/leonardo").await;
    assert_eq!(
        callback.header("authorization"),
        Some("Bearer abcd-callback-key")
    );
    assert_eq!(callback.body["type"], "image_generation.complete");
    let object = &callback.body["data"]["object"];
    assert_eq!(
        (object["id"].as_str(), object["status"].as_str()),
        (Some(id.as_str()), Some("COMPLETE"))
    );
    let (mut want, mut got) = (BTreeSet::new(), BTreeSet::new());
    paths(&serde_json::from_str(SEED).unwrap(), "", &mut want);
    paths(&callback.body, "", &mut got);
    let missing: Vec<_> = want.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "fields of the seed's sample missing from the callback: {missing:?}"
    );
    for uuid in [
        &object["id"],
        &object["images"][0]["id"],
        &object["images"][0]["generationId"],
    ] {
        assert!(
            uuid.as_str()
                .is_some_and(|s| s.len() == 36 && s.matches('-').count() == 4),
            "not a UUID: {uuid}"
        );
    }
    let schedulers = [
        "KLMS",
        "EULER_ANCESTRAL_DISCRETE",
        "EULER_DISCRETE",
        "DDIM",
        "DPM_SOLVER",
        "PNDM",
        "LEONARDO",
    ];
    assert!(
        schedulers.contains(&object["scheduler"].as_str().unwrap()),
        "{}",
        object["scheduler"]
    );
    let text = callback.body.to_string();
    assert!(
        !text.contains("abcd-callback-key") && !text.contains(&key),
        "a secret is in the callback body"
    );

    let polled: Value = http()
        .get(product.url(&format!("/api/rest/v1/generations/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        polled["generations_by_pk"]["status"], "COMPLETE",
        "{polled}"
    );
}
