//! `a1111::route`, as RunPod's `input.api` calls it: every endpoint answers what its HTTP route
//! answers, generations come back prepared, and anything else is a field error.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;
use webhook_service::api::a1111::{Routed, route};
use webhook_service::api::state::HttpState;
use webhook_service::api::validate::UrlRules;
use webhook_service::auth::Caller;
use webhook_service::clock::Clock;
use webhook_service::delivery::ssrf::{AddressPolicy, GuardedResolver};
use webhook_service::jobs::models::ModelCatalog;
use webhook_service::jobs::{JobService, JobSettings};
use webhook_service::media::MediaSigner;
use webhook_service::metrics::Metrics;
use webhook_service::store::sqlite::SqliteStore;

use super::{A1111, fake};

/// A job service (no dispatcher: `route` only prepares generations) asking the fake for models.
async fn state() -> HttpState {
    let (inference, _) = fake::start().await;
    let endpoints =
        webhook_service::jobs::endpoints::Endpoints::new(&[format!("http://{inference}")]).unwrap();
    let resolver = GuardedResolver::new(AddressPolicy::new(Vec::new()), Default::default());
    let settings = JobSettings {
        rules: UrlRules::default(),
        max_in_flight: 10,
        per_minute: 100,
        sync_wait: Duration::from_secs(5),
        generation_slots: 1,
        max_job_cost: u64::MAX,
        resolver: Arc::new(resolver),
    };
    let jobs = JobService::new(
        Arc::new(SqliteStore::open_in_memory().unwrap()),
        Clock::manual(1_700_000_000_000),
        MediaSigner::new(vec![7; 32], "http://127.0.0.1", Duration::from_secs(60)),
        Metrics::new(),
        Arc::new(Notify::new()),
        settings,
        ModelCatalog::new(endpoints),
    );
    HttpState { jobs }
}

async fn answer(
    state: &HttpState,
    caller: &Caller,
    method: &str,
    endpoint: &str,
    payload: Value,
) -> Value {
    match route(state, caller, method, endpoint, payload).await {
        Ok(Routed::Answer(value)) => value,
        other => panic!("{method} {endpoint}: expected an answer, got {other:?}"),
    }
}

#[tokio::test]
async fn every_a1111_endpoint_can_be_called_through_route() {
    let (state, http) = (state().await, A1111::start().await);
    let caller = Caller::anonymous();
    for endpoint in [
        "/sdapi/v1/samplers",
        "/sdapi/v1/schedulers",
        "/sdapi/v1/sd-models",
        "/sdapi/v1/options",
        "/sdapi/v1/progress",
    ] {
        let routed = answer(&state, &caller, "GET", endpoint, json!({})).await;
        assert_eq!(
            routed,
            http.get(endpoint).await.1,
            "{endpoint}: the same answer as its HTTP route"
        );
    }
    assert_eq!(
        answer(&state, &caller, "POST", "/sdapi/v1/interrupt", Value::Null).await,
        json!({})
    );
    assert_eq!(
        answer(
            &state,
            &caller,
            "post",
            "/sdapi/v1/options/",
            json!({"sd_model_checkpoint": "other-sd2"})
        )
        .await,
        Value::Null
    );
    assert_eq!(
        state.jobs.preferred_model(&caller).as_deref(),
        Some("other-sd2")
    );
    let png = fake::png_with_text(
        4,
        &[("parameters", "a tree\nSteps: 9, Seed: 5, Size: 8x16")],
    );
    let info = answer(
        &state,
        &caller,
        "POST",
        "/sdapi/v1/png-info",
        json!({"image": super::b64(&png)}),
    )
    .await;
    assert_eq!(info["parameters"]["Steps"], "9");
    let progress = answer(
        &state,
        &caller,
        "GET",
        "/sdapi/v1/progress?skip_current_image=true",
        json!({}),
    )
    .await;
    assert_eq!(progress["state"]["job_count"], 0);

    // Generations come back with A1111's defaults and the caller's model.
    let Ok(Routed::Generate(payload)) = route(
        &state,
        &caller,
        "POST",
        "/sdapi/v1/txt2img",
        json!({"prompt": "a cat", "init_images": ["x"]}),
    )
    .await
    else {
        panic!("txt2img is a generation")
    };
    let params = payload.into_params("input.payload").unwrap();
    assert_eq!(
        (
            params.steps,
            params.sampler_name.as_str(),
            params.model.as_str()
        ),
        (Some(50), "Euler", "other-sd2")
    );
    assert!(params.init_image.is_empty(), "txt2img has no init image");
    let init = super::b64(&png);
    let Ok(Routed::Generate(payload)) = route(
        &state,
        &caller,
        "POST",
        "/sdapi/v1/img2img",
        json!({"init_images": [init], "steps": 3}),
    )
    .await
    else {
        panic!("img2img is a generation")
    };
    assert_eq!(
        payload.into_params("input.payload").unwrap().init_image,
        png
    );
}

#[tokio::test]
async fn unknown_endpoints_methods_and_fields_are_errors_naming_them() {
    let state = state().await;
    let caller = Caller::anonymous();
    for (method, endpoint) in [
        ("GET", "/sdapi/v1/txt2img"),
        ("POST", "/sdapi/v1/samplers"),
        ("GET", "/sdapi/v1/loras"),
        ("POST", "/sdapi/v1/skip"),
        ("GET", "/v2/x/run"),
    ] {
        let error = route(&state, &caller, method, endpoint, json!({}))
            .await
            .expect_err(endpoint);
        assert_eq!(error.status().as_u16(), 422, "{method} {endpoint}");
        assert!(
            error.message().starts_with("input.api.endpoint:"),
            "{}",
            error.message()
        );
    }
    let error = route(
        &state,
        &caller,
        "POST",
        "/sdapi/v1/txt2img",
        json!({"override_settings": {"sd_model_checkpoint": "sdxl"}}),
    )
    .await
    .unwrap_err();
    assert!(
        error
            .message()
            .starts_with("input.payload.override_settings.sd_model_checkpoint:"),
        "{}",
        error.message()
    );
    let error = route(&state, &caller, "POST", "/sdapi/v1/img2img", json!({}))
        .await
        .unwrap_err();
    assert!(
        error.message().starts_with("input.payload.init_images:"),
        "{}",
        error.message()
    );
    let error = route(
        &state,
        &caller,
        "POST",
        "/sdapi/v1/options",
        json!({"sd_model_checkpoint": "sdxl"}),
    )
    .await
    .unwrap_err();
    assert!(
        error
            .message()
            .starts_with("input.payload.sd_model_checkpoint:"),
        "{}",
        error.message()
    );
}
