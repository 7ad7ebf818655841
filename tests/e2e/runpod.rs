//! RunPod's A1111 worker (seeds 000/001): the documented payload (`False` → `false`; 64×64 and
//! 4 steps so the tiny model answers in seconds — the payload exactly as written is
//! `webhook-service/tests/it/runpod.rs`'s, on a fake server) to the documented callback, and
//! the same job through `/runsync`, `/status` and an A1111 API call through `input.api`.

use serde_json::{Value, json};

use crate::harness::{Product, http};

fn seed_payload() -> Value {
    json!({
        "prompt": "an astronaut riding a horse",
        "negative_prompt": "",
        "seed": -1,
        "batch_size": 1,
        "steps": 4,
        "cfg_scale": 7,
        "width": 64,
        "height": 64,
        "sampler_name": "DPM++ SDE Karras",
        "sampler_index": "DPM++ SDE Karras",
        "restore_faces": false
    })
}

#[tokio::test]
async fn seed_request_to_callback_status_and_runsync() {
    let product = Product::start().await;
    let key = product.named_key("runpod-user").await;
    let hook = product.receiver.url("/runpod");
    let body = json!({
        "webhook": hook,
        "input": {"api": {"method": "POST", "endpoint": "/sdapi/v1/txt2img"}, "payload": seed_payload()}
    });
    let run: Value = http()
        .post(product.url("/v2/sd-a1111/run"))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(run["status"], "IN_QUEUE", "{run}");
    let id = run["id"].as_str().unwrap().to_owned();

    let callback = product.receiver.callback("/runpod").await;
    let object = callback.body.as_object().unwrap();
    let mut keys: Vec<_> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "delayTime",
            "executionTime",
            "id",
            "input",
            "output",
            "status",
            "webhook"
        ],
        "{}",
        callback.body
    );
    assert_eq!(
        (object["id"].as_str(), object["status"].as_str()),
        (Some(id.as_str()), Some("COMPLETED"))
    );
    assert_eq!(object["input"], body["input"]);
    assert_eq!(object["webhook"], hook.as_str());
    let info: Value = serde_json::from_str(
        object["output"]["info"]
            .as_str()
            .expect("info is a JSON string"),
    )
    .unwrap();
    assert_eq!(info["prompt"], "an astronaut riding a horse");
    assert_eq!(
        object["output"]["parameters"]["sampler_name"],
        "DPM++ SDE Karras"
    );
    assert_eq!(object["output"]["images"].as_array().unwrap().len(), 1);
    assert!(object["executionTime"].as_u64().unwrap() > 0);

    let status: Value = http()
        .get(product.url(&format!("/v2/sd-a1111/status/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status, callback.body, "/status and the callback agree");

    // /runsync without a webhook waits for the result.
    let sync = json!({"input": {"api": {"method": "POST", "endpoint": "/sdapi/v1/txt2img"}, "payload": seed_payload()}});
    let done: Value = http()
        .post(product.url("/v2/sd-a1111/runsync"))
        .bearer_auth(&key)
        .json(&sync)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["output"]["images"].as_array().unwrap().len(), 1);

    // An A1111 API call through the envelope is answered, not generated.
    let models = json!({"input": {"api": {"method": "GET", "endpoint": "/sdapi/v1/sd-models"}, "payload": {}}});
    let answer: Value = http()
        .post(product.url("/v2/sd-a1111/runsync"))
        .bearer_auth(&key)
        .json(&models)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["status"], "COMPLETED", "{answer}");
    assert_eq!(
        answer["output"][0]["model_name"],
        crate::harness::MODEL,
        "{answer}"
    );
}
