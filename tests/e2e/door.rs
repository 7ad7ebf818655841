//! Validation at the door against the real inference server: a sampler it does not accept,
//! or a model it does not serve, is refused before the job is stored, naming the field; the
//! names it does accept (A1111's, diffusers', Leonardo's) pass.

use serde_json::{Value, json};

use crate::harness::{MODEL, Product, http};

#[tokio::test]
async fn unknown_samplers_and_models_are_refused_at_submission() {
    let product = Product::start().await;
    let key = product.named_key("door").await;
    let submit = |params: Value| {
        let (url, key) = (product.url("/v1/jobs"), key.clone());
        let hook = product.receiver.url("/door");
        async move {
            let body = json!({"params": params, "webhook": {"url": hook, "format": "standard"}});
            let response = http()
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, error) = submit(json!({"prompt": "p", "sampler_name": "Euler z"})).await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["field"], "params.sampler_name");
    let rule = error["error"]["rule"].as_str().unwrap();
    assert!(
        rule.starts_with("unknown sampler \"Euler z\"; accepted: ")
            && rule.contains("DPM++ 2M Karras"),
        "{rule}"
    );

    // The native HTTP API takes A1111's fields: the model is `override_settings.sd_model_checkpoint`.
    let (status, error) =
        submit(json!({"prompt": "p", "override_settings": {"sd_model_checkpoint": "sdxl"}})).await;
    assert_eq!(
        (status, error["error"]["field"].as_str()),
        (422, Some("params.model")),
        "{error}"
    );

    for sampler in [
        "Euler a",
        "DPM++ 2M Karras",
        "EulerDiscreteScheduler",
        "EULER_DISCRETE",
    ] {
        let model = json!({"sd_model_checkpoint": MODEL});
        let params = json!({"prompt": "p", "sampler_name": sampler, "override_settings": model, "steps": 1, "width": 64, "height": 64});
        let (status, answer) = submit(params).await;
        assert_eq!(status, 202, "{sampler}: {answer}");
    }
}
