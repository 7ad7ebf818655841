//! Callers are kept apart: a job belongs to the key that created it, and another key cannot
//! read it, cancel it, list its deliveries, fetch its images or re-send its callback.

use serde_json::{Value, json};

use crate::harness::{Product, http};

#[tokio::test]
async fn key_b_cannot_see_cancel_or_redeliver_key_a_s_job() {
    let product = Product::start().await;
    let (a, b) = (product.named_key("a").await, product.named_key("b").await);
    let hook = product.receiver.url("/a");
    let submitted: Value = http()
        .post(product.url("/v1/jobs"))
        .bearer_auth(&a)
        .json(&json!({
            "params": {"prompt": "a red fox", "steps": 2, "width": 64, "height": 64, "seed": 7},
            "webhook": {"url": hook, "format": "standard", "secret": "receiver-token"}
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = submitted["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{submitted}"))
        .to_owned();
    let callback = product.receiver.callback("/a").await;
    assert_eq!(callback.body["type"], "job.completed", "{}", callback.body);
    assert_eq!(
        callback.header("authorization"),
        Some("Bearer receiver-token")
    );

    let deliveries: Value = http()
        .get(product.url(&format!("/v1/jobs/{id}/deliveries")))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let delivery = deliveries["deliveries"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let status = |r: reqwest::Response| r.status().as_u16();
    for path in [
        format!("/v1/jobs/{id}"),
        format!("/v1/jobs/{id}/deliveries"),
        format!("/v1/jobs/{id}/images/0"),
    ] {
        assert_eq!(
            status(
                http()
                    .get(product.url(&path))
                    .bearer_auth(&b)
                    .send()
                    .await
                    .unwrap()
            ),
            404,
            "{path}"
        );
        assert_eq!(
            status(
                http()
                    .get(product.url(&path))
                    .bearer_auth(&a)
                    .send()
                    .await
                    .unwrap()
            ),
            200,
            "{path}"
        );
    }
    assert_eq!(
        status(
            http()
                .post(product.url(&format!("/v1/jobs/{id}/cancel")))
                .bearer_auth(&b)
                .send()
                .await
                .unwrap()
        ),
        404
    );
    let redeliver = product.url(&format!("/v1/deliveries/{delivery}/redeliver"));
    assert_eq!(
        status(
            http()
                .post(&redeliver)
                .bearer_auth(&b)
                .send()
                .await
                .unwrap()
        ),
        404
    );
    assert_eq!(
        status(
            http()
                .post(&redeliver)
                .bearer_auth(&a)
                .send()
                .await
                .unwrap()
        ),
        200
    );
    assert_eq!(
        status(
            http()
                .get(product.url(&format!("/v1/jobs/{id}")))
                .send()
                .await
                .unwrap()
        ),
        401
    );
}
