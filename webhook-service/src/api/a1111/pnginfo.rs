//! `png-info`: the text chunks of a PNG and its A1111 infotext parsed into fields, as A1111's
//! `pnginfoapi` does (`images.read_info_from_image` and
//! `infotext_utils.parse_generation_parameters`).

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::api::error::ApiError;

/// `POST /sdapi/v1/png-info` with `{"image": "<base64 or data URL>"}` →
/// `{"info": "<parameters chunk>", "items": {other text chunks}, "parameters": {parsed}}`.
/// `field` names the body in errors.
pub fn png_info(body: &Value, field: &str) -> Result<Value, ApiError> {
    let image_field = format!("{field}.image");
    let data = match body.get("image") {
        Some(Value::String(s)) => s.trim(),
        None | Some(Value::Null) => "",
        Some(_) => {
            return Err(ApiError::field(
                image_field,
                "must be a base64 PNG or a data URL",
            ));
        }
    };
    if data.is_empty() {
        // A1111 answers an empty image with an empty info.
        return Ok(json!({"info": "", "items": {}, "parameters": {}}));
    }
    let b64 = data.split_once(";base64,").map_or(data, |(_, b)| b);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| ApiError::field(&image_field, format!("must be base64 image data ({e})")))?;
    let mut items = text_chunks(&bytes)
        .map_err(|e| ApiError::field(&image_field, format!("must be a PNG image ({e})")))?;
    let info = match items.remove("parameters") {
        Some(Value::String(text)) => text,
        _ => String::new(),
    };
    Ok(json!({"info": info, "items": items, "parameters": parse_infotext(&info)}))
}

/// Every text chunk before the image data (`tEXt`, `zTXt`, `iTXt`), by keyword.
fn text_chunks(png: &[u8]) -> Result<Map<String, Value>, png::DecodingError> {
    let reader = png::Decoder::new(std::io::Cursor::new(png)).read_info()?;
    let info = reader.info();
    let mut out = Map::new();
    for chunk in &info.uncompressed_latin1_text {
        out.insert(chunk.keyword.clone(), json!(chunk.text));
    }
    for chunk in &info.compressed_latin1_text {
        out.insert(chunk.keyword.clone(), json!(chunk.get_text()?));
    }
    for chunk in &info.utf8_text {
        out.insert(chunk.keyword.clone(), json!(chunk.get_text()?));
    }
    Ok(out)
}

/// One `key: value` of an infotext's last line, as A1111's `re_param` finds them:
/// `\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)`, scanning from `at`.
fn param_at(line: &str, at: usize) -> Option<(String, String, usize)> {
    let bytes = line.as_bytes();
    let mut i = at;
    while i < bytes.len() && (bytes[i] as char).is_whitespace() {
        i += 1;
    }
    let key_start = i;
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let first = line[i..].chars().next()?;
    if !word(first) {
        return None;
    }
    let key_end = key_start
        + line[key_start..]
            .char_indices()
            .find(|(_, c)| !(word(*c) || matches!(c, ' ' | '-' | '/')))
            .map_or(line.len() - key_start, |(n, _)| n);
    if line[key_start..key_end].chars().count() < 2 || bytes.get(key_end) != Some(&b':') {
        return None;
    }
    let mut v = key_end + 1;
    while v < bytes.len() && (bytes[v] as char).is_whitespace() {
        v += 1;
    }
    // A quoted value, when a closing quote followed by `,` or the end comes.
    if bytes.get(v) == Some(&b'"') {
        let mut j = v + 1;
        while j < bytes.len() {
            match bytes[j] {
                b'\\' => j += 2,
                b'"' if j > v + 1 => {
                    let after = j + 1;
                    if after == bytes.len() || bytes[after] == b',' {
                        let next = if after == bytes.len() {
                            after
                        } else {
                            after + 1
                        };
                        return Some((
                            line[key_start..key_end].to_owned(),
                            line[v..after].to_owned(),
                            next,
                        ));
                    }
                    break;
                }
                b'"' => break,
                _ => j += 1,
            }
        }
    }
    let end = line[v..].find(',').map_or(line.len(), |n| v + n);
    let next = if end == line.len() { end } else { end + 1 };
    Some((
        line[key_start..key_end].to_owned(),
        line[v..end].to_owned(),
        next,
    ))
}

/// Every `key: value` of a line, as `re_param.findall` returns them.
fn find_params(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at <= line.len() {
        match param_at(line, at) {
            // An empty match at the end ends the scan, as in Python.
            Some((key, value, next)) if next > at => {
                out.push((key, value));
                at = next;
            }
            _ => {
                at += line[at..].chars().next().map_or(1, char::len_utf8);
            }
        }
    }
    out
}

/// A1111's `parse_generation_parameters`: `Prompt`, `Negative prompt`, each `key: value` of
/// the last line (sizes split into `-1`/`-2`), and the defaults A1111 adds for fields missing.
pub fn parse_infotext(text: &str) -> Value {
    let mut res = Map::new();
    let mut lines: Vec<&str> = text.trim().split('\n').collect();
    let mut last = lines.pop().unwrap_or_default();
    if find_params(last).len() < 3 {
        lines.push(last);
        last = "";
    }
    let (mut prompt, mut negative, mut in_negative) = (String::new(), String::new(), false);
    for line in lines {
        let mut line = line.trim();
        if let Some(rest) = line.strip_prefix("Negative prompt:") {
            in_negative = true;
            line = rest.trim();
        }
        let target = if in_negative {
            &mut negative
        } else {
            &mut prompt
        };
        if !target.is_empty() {
            target.push('\n');
        }
        target.push_str(line);
    }
    res.insert("Prompt".into(), json!(prompt));
    res.insert("Negative prompt".into(), json!(negative));
    for (key, value) in find_params(last) {
        if value.is_empty() {
            // A1111's `v[0]` raises on an empty value and the field is skipped.
            continue;
        }
        let value = if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
            serde_json::from_str::<String>(&value).unwrap_or(value)
        } else {
            value
        };
        match value.split_once('x') {
            Some((w, h))
                if !w.is_empty()
                    && !h.is_empty()
                    && w.bytes().all(|b| b.is_ascii_digit())
                    && h.bytes().all(|b| b.is_ascii_digit()) =>
            {
                res.insert(format!("{key}-1"), json!(w));
                res.insert(format!("{key}-2"), json!(h));
            }
            _ => {
                res.insert(key, json!(value));
            }
        }
    }
    let defaults = json!([
        ["Clip skip", "1"],
        ["Hires resize-1", 0],
        ["Hires resize-2", 0],
        ["Hires sampler", "Use same sampler"],
        ["Hires schedule type", "Use same scheduler"],
        ["Hires checkpoint", "Use same checkpoint"],
        ["Hires prompt", ""],
        ["Hires negative prompt", ""],
        ["Mask mode", "Inpaint masked"],
        ["Masked content", "original"],
        ["Inpaint area", "Whole picture"],
        ["Masked area padding", 32],
        ["RNG", "GPU"],
        ["Schedule type", "Automatic"],
        ["Schedule max sigma", 0],
        ["Schedule min sigma", 0],
        ["Schedule rho", 0],
        ["VAE Encoder", "Full"],
        ["VAE Decoder", "Full"],
        ["FP8 weight", "Disable"],
        ["Emphasis", "Original"],
        ["Refiner switch by sampling steps", false],
    ]);
    for pair in defaults.as_array().into_iter().flatten() {
        if let (Some(key), Some(value)) = (pair[0].as_str(), pair.get(1)) {
            res.entry(key).or_insert_with(|| value.clone());
        }
    }
    Value::Object(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infotext_is_parsed_as_a1111_parses_it() {
        let text = "an astronaut, riding a horse\nNegative prompt: blurry\nSteps: 30, Sampler: DPM++ SDE, Schedule type: Karras, CFG scale: 7.0, Seed: 476701233, Size: 512x768, Model: deliberate_v2, Lora hashes: \"a: 1, b: 2\", Version: 1.5.1";
        let p = parse_infotext(text);
        assert_eq!(p["Prompt"], "an astronaut, riding a horse");
        assert_eq!(p["Negative prompt"], "blurry");
        assert_eq!(
            (
                p["Steps"].clone(),
                p["Sampler"].clone(),
                p["CFG scale"].clone()
            ),
            (json!("30"), json!("DPM++ SDE"), json!("7.0"))
        );
        assert_eq!(
            (p["Size-1"].clone(), p["Size-2"].clone(), p["Seed"].clone()),
            (json!("512"), json!("768"), json!("476701233"))
        );
        assert_eq!(p["Lora hashes"], "a: 1, b: 2");
        assert_eq!(
            (
                p["Schedule type"].clone(),
                p["Clip skip"].clone(),
                p["Version"].clone()
            ),
            (json!("Karras"), json!("1"), json!("1.5.1"))
        );
        assert!(p.get("Size").is_none());
    }

    #[test]
    fn a_short_last_line_is_part_of_the_prompt() {
        let p = parse_infotext("a cat\nSteps: 20");
        assert_eq!(p["Prompt"], "a cat\nSteps: 20");
        assert!(p.get("Steps").is_none());
        assert_eq!(p["Schedule type"], "Automatic");
    }
}
