//! Reading a RunPod `/run` or `/runsync` body and turning it into a job.
//!
//! The body is `{"webhook"?, "input": {"api"?: {"method", "endpoint"}, "payload"?: {...}},
//! "policy"?: {"executionTimeout"?, "ttl"?}}` (seeds 000/001). `input.api` is routed as RunPod's
//! A1111 worker routes it (through [`a1111::route`]): txt2img/img2img become a generation, other
//! endpoints are answered at once without one. Without `input.api` the call is txt2img, with
//! `input.payload` as its body, or `input` itself when there is no `payload` (the older worker's
//! `{"input": {"prompt": ...}}`).

use axum::http::HeaderMap;
use serde_json::{Map, Value, json};

use crate::api::a1111::{self, Routed};
use crate::api::error::ApiError;
use crate::api::state::{HttpState, idempotency_header};
use crate::api::validate::Submission;
use crate::auth::Caller;
use crate::formats::runpod::API_ANSWER;
use crate::store::Inserted;

/// The A1111 call a body without `input.api` makes.
const DEFAULT_ENDPOINT: &str = "/sdapi/v1/txt2img";

/// A RunPod job request, read field by field so that every refusal names the field.
#[derive(Debug)]
struct RunRequest {
    webhook: String,
    input: Map<String, Value>,
    method: String,
    endpoint: String,
    payload: Value,
    execution_timeout_ms: Option<u64>,
}

/// How a submitted job started.
#[derive(Debug)]
pub(super) struct Started {
    /// The stored job (or its idempotent twin).
    pub inserted: Inserted,
    /// True when it was answered at once (an A1111 API call other than a generation).
    pub answered: bool,
}

/// Reads `body`, routes its `input.api` and stores the job for `caller`: a generation is
/// queued, any other A1111 call is stored already answered (its callback, if `webhook` was
/// given, queued at once).
pub(super) async fn submit(
    state: &HttpState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Value,
) -> Result<Started, ApiError> {
    let request = read(body)?;
    let routed = a1111::route(
        state,
        caller,
        &request.method,
        &request.endpoint,
        request.payload,
    )
    .await?;
    let mut submission = Submission {
        url: request.webhook,
        format: "runpod".into(),
        idempotency_key: idempotency_header(headers),
        vendor_context: json!({"input": Value::Object(request.input)}),
        webhook_optional: true,
        execution_timeout_ms: request.execution_timeout_ms,
        ..Submission::default()
    };
    let (inserted, answered) = match routed {
        Routed::Generate(payload) => {
            submission.params = payload.into_params("input.payload")?;
            (state.jobs.accept(caller, submission).await, false)
        }
        Routed::Answer(answer) => {
            submission.vendor_context[API_ANSWER] = json!(true);
            (state.jobs.answer(caller, submission, answer).await, true)
        }
    };
    let inserted = inserted.map_err(|e| {
        ApiError::from(e)
            .rename_field("params", "input.payload")
            .rename_field("webhook.url", "webhook")
    })?;
    Ok(Started { inserted, answered })
}

fn read(body: Value) -> Result<RunRequest, ApiError> {
    let Value::Object(mut body) = body else {
        return Err(ApiError::bad_body(
            "the body must be a JSON object: {\"input\": {...}}",
        ));
    };
    let webhook = match body.remove("webhook") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(url)) => url,
        Some(_) => return Err(ApiError::field("webhook", "must be a URL string")),
    };
    let input = match body.remove("input") {
        Some(Value::Object(input)) => input,
        None | Some(Value::Null) => {
            return Err(ApiError::field(
                "input",
                "is required: {\"api\": {...}, \"payload\": {...}}",
            ));
        }
        Some(_) => return Err(ApiError::field("input", "must be a JSON object")),
    };
    let (method, endpoint) = match input.get("api") {
        None | Some(Value::Null) => ("POST".to_owned(), DEFAULT_ENDPOINT.to_owned()),
        Some(Value::Object(api)) => (
            text(api, "method", "input.api.method")?,
            text(api, "endpoint", "input.api.endpoint")?,
        ),
        Some(_) => {
            return Err(ApiError::field(
                "input.api",
                "must be an object {\"method\", \"endpoint\"}",
            ));
        }
    };
    let payload = match input.get("payload") {
        Some(Value::Object(_)) => input["payload"].clone(),
        None | Some(Value::Null) if !input.contains_key("api") => Value::Object(input.clone()),
        None | Some(Value::Null) => json!({}),
        Some(_) => return Err(ApiError::field("input.payload", "must be a JSON object")),
    };
    let execution_timeout_ms = policy(body.remove("policy"))?;
    Ok(RunRequest {
        webhook,
        input,
        method,
        endpoint,
        payload,
        execution_timeout_ms,
    })
}

fn text(object: &Map<String, Value>, key: &str, field: &str) -> Result<String, ApiError> {
    match object.get(key) {
        Some(Value::String(value)) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(ApiError::field(field, "is required"))
        }
        Some(_) => Err(ApiError::field(field, "must be a string")),
    }
}

/// `policy.executionTimeout` in ms, if given. `policy.ttl` (how long RunPod keeps a job) is
/// checked for its type only: this service keeps jobs and their results longer than any ttl.
fn policy(policy: Option<Value>) -> Result<Option<u64>, ApiError> {
    let policy = match policy {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(policy)) => policy,
        Some(_) => return Err(ApiError::field("policy", "must be a JSON object")),
    };
    let ms = |key: &str| match policy.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_u64().map(Some).ok_or_else(|| {
            ApiError::field(
                format!("policy.{key}"),
                format!("must be a whole number of milliseconds, got {value}"),
            )
        }),
    };
    ms("ttl")?;
    ms("executionTimeout")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_body_reads_as_a_txt2img_call() {
        let body = json!({
            "webhook": "https://76e6-45-222-21-223.ngrok.io/",
            "input": {"api": {"method": "POST", "endpoint": "/sdapi/v1/txt2img"}, "payload": {"prompt": "a", "restore_faces": false}},
        });
        let request = read(body).unwrap();
        assert_eq!(
            (request.method.as_str(), request.endpoint.as_str()),
            ("POST", "/sdapi/v1/txt2img")
        );
        assert_eq!(
            request.payload,
            json!({"prompt": "a", "restore_faces": false})
        );
        assert_eq!(request.webhook, "https://76e6-45-222-21-223.ngrok.io/");
        assert_eq!(request.execution_timeout_ms, None);
    }

    #[test]
    fn without_api_the_input_is_a_txt2img_payload() {
        let request = read(json!({"input": {"prompt": "a cat", "steps": 4}})).unwrap();
        assert_eq!(request.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(request.payload, json!({"prompt": "a cat", "steps": 4}));
        let request = read(json!({"input": {"payload": {"prompt": "a dog"}}})).unwrap();
        assert_eq!(request.payload, json!({"prompt": "a dog"}));
    }

    #[test]
    fn policy_and_shapes_are_checked_by_field() {
        let request =
            read(json!({"input": {}, "policy": {"executionTimeout": 5000, "ttl": 60000}})).unwrap();
        assert_eq!(request.execution_timeout_ms, Some(5000));
        for (body, field) in [
            (
                json!({"input": {}, "policy": {"executionTimeout": "soon"}}),
                "policy.executionTimeout",
            ),
            (json!({"input": {}, "policy": {"ttl": -1}}), "policy.ttl"),
            (json!({"input": {}, "policy": 3}), "policy"),
            (json!({"webhook": 3, "input": {}}), "webhook"),
            (json!({}), "input"),
            (
                json!({"input": {"api": {"endpoint": "/sdapi/v1/txt2img"}}}),
                "input.api.method",
            ),
            (
                json!({"input": {"api": {"method": "GET"}}}),
                "input.api.endpoint",
            ),
            (json!({"input": {"api": "txt2img"}}), "input.api"),
            (json!({"input": {"payload": []}}), "input.payload"),
        ] {
            let error = read(body.clone()).unwrap_err();
            assert_eq!(
                error.status(),
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "{body}"
            );
            assert!(
                error.message().starts_with(&format!("{field}: ")),
                "{body}: {}",
                error.message()
            );
        }
        assert_eq!(
            read(json!([1])).unwrap_err().status(),
            axum::http::StatusCode::BAD_REQUEST
        );
    }
}
