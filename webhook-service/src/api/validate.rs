//! Checks a submitted job, field by field, before anything is stored.
//!
//! Both APIs translate their request into a [`Submission`] and call [`submission`]; every
//! refusal names the field and the rule it broke, the way `INVALID_ARGUMENT` and HTTP 422
//! bodies report it.

use std::ops::RangeInclusive;

use sdserve_proto::v1::GenerationParams;

use crate::delivery::signing::SigningKey;
use crate::domain::{EventKind, Format, NewJob, Secret, WebhookTarget};

/// The longest webhook URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// The longest bearer secret accepted, in bytes.
pub const MAX_SECRET_LEN: usize = 512;
/// The longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// The longest prompt accepted, in bytes.
pub const MAX_PROMPT_LEN: usize = 32 * 1024;
/// The longest execution timeout accepted: one day.
pub const MAX_EXECUTION_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
/// Largest init image side, in pixels: the inference server's own limit (`MAX_INIT_SIDE`),
/// checked here too so an oversized image is refused before it is stored.
pub const MAX_INIT_SIDE: u32 = 8192;

/// A refused field: which one and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct FieldError {
    /// Dotted path of the field, e.g. `webhook.url`.
    pub field: String,
    /// The rule, for a person to read.
    pub rule: String,
}

fn refuse(field: &str, rule: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        rule: rule.into(),
    }
}

/// A job as any API received it, before validation.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    /// Generation parameters.
    pub params: GenerationParams,
    /// `webhook.url`.
    pub url: String,
    /// `webhook.secret`, empty for none.
    pub secret: String,
    /// `webhook.format`.
    pub format: String,
    /// `webhook.events`.
    pub events: Vec<String>,
    /// `webhook.signing_secret`, empty for none.
    pub signing_secret: String,
    /// Idempotency key, empty for none.
    pub idempotency_key: String,
    /// Vendor request fields to echo (JSON object or null).
    pub vendor_context: serde_json::Value,
    /// True when the caller may leave `url` empty because it polls or waits for the result
    /// (RunPod, A1111, Cerebrium without `webhook_endpoint`); no callback is sent then.
    pub webhook_optional: bool,
    /// Further generations of the same job (Diffute's prompts after the first).
    pub extra_parts: Vec<GenerationParams>,
    /// Execution timeout in ms (RunPod `policy.executionTimeout`).
    pub execution_timeout_ms: Option<u64>,
}

/// What the service's configuration allows of webhook URLs.
#[derive(Debug, Clone, Copy, Default)]
pub struct UrlRules {
    /// Whether `http://` URLs are accepted.
    pub allow_http: bool,
}

/// Validates `s` into a job with id `id` accepted at `now_ms`.
pub fn submission(
    s: Submission,
    rules: UrlRules,
    id: String,
    now_ms: i64,
) -> Result<NewJob, FieldError> {
    params(&s.params)?;
    for (i, part) in s.extra_parts.iter().enumerate() {
        params(part).map_err(|e| FieldError {
            field: e.field.replacen("params", &format!("extra_parts[{i}]"), 1),
            rule: e.rule,
        })?;
    }
    let url = match s.url.as_str() {
        "" if s.webhook_optional => None,
        raw => Some(webhook_url(raw, rules)?),
    };
    if s.format.is_empty() {
        return Err(refuse(
            "webhook.format",
            format!("is required; one of {}", names(Format::ALL)),
        ));
    }
    let format: Format = s
        .format
        .parse()
        .map_err(|e: crate::domain::UnknownName| refuse("webhook.format", e.to_string()))?;
    let secret = optional_secret(&s.secret)?;
    let signing_secret = match s.signing_secret.as_str() {
        "" => None,
        key => {
            SigningKey::parse(key).map_err(|e| refuse("webhook.signing_secret", e.to_string()))?;
            Some(Secret::new(key))
        }
    };
    let events = if s.events.is_empty() {
        vec![EventKind::Completed, EventKind::Failed]
    } else {
        s.events
            .iter()
            .map(|e| {
                e.parse().map_err(|e: crate::domain::UnknownName| {
                    refuse("webhook.events", e.to_string())
                })
            })
            .collect::<Result<_, _>>()?
    };
    if s.idempotency_key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(refuse(
            "idempotency_key",
            format!("must be at most {MAX_IDEMPOTENCY_KEY_LEN} characters"),
        ));
    }
    if !s.vendor_context.is_null() && !s.vendor_context.is_object() {
        return Err(refuse("vendor_context_json", "must be a JSON object"));
    }
    if let Some(ms) = s.execution_timeout_ms
        && !(1_000..=MAX_EXECUTION_TIMEOUT_MS).contains(&ms)
    {
        return Err(refuse(
            "policy.executionTimeout",
            format!("must be between 1000 and {MAX_EXECUTION_TIMEOUT_MS} ms, got {ms}"),
        ));
    }
    Ok(NewJob {
        id,
        owner: String::new(),
        params: s.params,
        extra_parts: s.extra_parts,
        execution_timeout_ms: s.execution_timeout_ms,
        webhook: WebhookTarget {
            url,
            secret,
            format,
            events,
            signing_secret,
        },
        idempotency_key: (!s.idempotency_key.is_empty()).then_some(s.idempotency_key),
        vendor_context: s.vendor_context,
        created_at_ms: now_ms,
    })
}

fn names<T: std::fmt::Display>(all: &[T]) -> String {
    all.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks a webhook URL: absolute, https (or http when allowed), a host, no credentials.
pub fn webhook_url(raw: &str, rules: UrlRules) -> Result<String, FieldError> {
    const FIELD: &str = "webhook.url";
    if raw.is_empty() {
        return Err(refuse(FIELD, "is required"));
    }
    if raw.len() > MAX_URL_LEN {
        return Err(refuse(
            FIELD,
            format!("must be at most {MAX_URL_LEN} characters"),
        ));
    }
    let url =
        url::Url::parse(raw).map_err(|e| refuse(FIELD, format!("is not an absolute URL ({e})")))?;
    match url.scheme() {
        "https" => {}
        "http" if rules.allow_http => {}
        "http" => {
            return Err(refuse(
                FIELD,
                "must use https (plain http is not enabled on this service)",
            ));
        }
        other => {
            return Err(refuse(
                FIELD,
                format!("scheme {other:?} is not allowed; use https"),
            ));
        }
    }
    if url.host().is_none() {
        return Err(refuse(FIELD, "must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse(
            FIELD,
            "must not carry credentials; use webhook.secret",
        ));
    }
    Ok(url.to_string())
}

fn optional_secret(raw: &str) -> Result<Option<Secret>, FieldError> {
    const FIELD: &str = "webhook.secret";
    if raw.len() > MAX_SECRET_LEN {
        return Err(refuse(
            FIELD,
            format!("must be at most {MAX_SECRET_LEN} bytes"),
        ));
    }
    if !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(refuse(FIELD, "must be visible ASCII without spaces"));
    }
    Ok((!raw.is_empty()).then(|| Secret::new(raw)))
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    value: Option<T>,
    range: RangeInclusive<T>,
) -> Result<(), FieldError> {
    match value {
        Some(v) if !range.contains(&v) => Err(refuse(
            field,
            format!(
                "must be between {} and {}, got {v}",
                range.start(),
                range.end()
            ),
        )),
        _ => Ok(()),
    }
}

/// Checks generation parameters against the ranges documented in `common.proto`.
pub fn params(p: &GenerationParams) -> Result<(), FieldError> {
    if p.prompt.len() > MAX_PROMPT_LEN {
        return Err(refuse(
            "params.prompt",
            format!("must be at most {MAX_PROMPT_LEN} bytes"),
        ));
    }
    if p.negative_prompt.len() > MAX_PROMPT_LEN {
        return Err(refuse(
            "params.negative_prompt",
            format!("must be at most {MAX_PROMPT_LEN} bytes"),
        ));
    }
    in_range("params.seed", p.seed, -1..=i64::from(u32::MAX))?;
    in_range("params.subseed", p.subseed, -1..=i64::from(u32::MAX))?;
    in_range("params.subseed_strength", p.subseed_strength, 0.0..=1.0)?;
    in_range("params.batch_size", p.batch_size, 1..=16)?;
    in_range("params.n_iter", p.n_iter, 1..=100)?;
    in_range("params.steps", p.steps, 1..=150)?;
    in_range("params.cfg_scale", p.cfg_scale, 1.0..=30.0)?;
    in_range("params.denoising_strength", p.denoising_strength, 0.0..=1.0)?;
    in_range("params.clip_skip", p.clip_skip, 1..=12)?;
    for (field, value) in [("params.width", p.width), ("params.height", p.height)] {
        in_range(field, value, 64..=2048)?;
        if value.is_some_and(|v| v % 8 != 0) {
            return Err(refuse(field, "must be a multiple of 8"));
        }
    }
    if !p.init_image.is_empty() {
        init_image(&p.init_image)?;
    }
    Ok(())
}

/// Checks an init image's header: a PNG or JPEG of at most [`MAX_INIT_SIDE`] pixels a side.
fn init_image(bytes: &[u8]) -> Result<(), FieldError> {
    const FIELD: &str = "params.init_image";
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| refuse(FIELD, format!("must be a PNG or JPEG image ({e})")))?;
    if !matches!(
        reader.format(),
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg)
    ) {
        return Err(refuse(FIELD, "must be a PNG or JPEG image"));
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| refuse(FIELD, format!("must be a PNG or JPEG image ({e})")))?;
    if w > MAX_INIT_SIDE || h > MAX_INIT_SIDE {
        return Err(refuse(
            FIELD,
            format!("is {w}×{h} pixels; at most {MAX_INIT_SIDE} pixels a side are accepted"),
        ));
    }
    Ok(())
}
