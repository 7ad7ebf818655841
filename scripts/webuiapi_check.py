#!/usr/bin/env python3
"""Checks sdserve's A1111 API (/sdapi/v1) with `webuiapi`, the PyPI client for AUTOMATIC1111's
API, used unchanged: txt2img, img2img, sd-models, samplers, schedulers, options (switching the
model), progress, interrupt and png-info, with the API key sent as HTTP Basic auth.

    pip install webuiapi
    SDSERVE_API_KEY=sds_... python3 scripts/webuiapi_check.py --host 127.0.0.1 --port 8080

Exits 0 when every check passes; otherwise prints what differed and exits 1 (2 when webuiapi
is not installed).
"""

import argparse
import os
import sys

try:
    import webuiapi
    from PIL import Image
except ImportError as e:  # pragma: no cover - environment problem, not a mismatch
    print(f"webuiapi_check: cannot import webuiapi ({e}); pip install webuiapi", file=sys.stderr)
    sys.exit(2)

FAILURES = []


def check(condition, message):
    """Records a mismatch instead of stopping, so one run reports every difference."""
    if not condition:
        FAILURES.append(message)
        print(f"MISMATCH: {message}", file=sys.stderr)
    return condition


def has_keys(obj, keys, what):
    missing = [k for k in keys if not isinstance(obj, dict) or k not in obj]
    return check(not missing, f"{what}: missing keys {missing} in {obj!r:.300}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--key", default=os.environ.get("SDSERVE_API_KEY", ""), help="API key (default: $SDSERVE_API_KEY)")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    if not args.key:
        print("webuiapi_check: no API key: pass --key or set SDSERVE_API_KEY", file=sys.stderr)
        return 2

    # Without a key every route answers 401.
    anonymous = webuiapi.WebUIApi(host=args.host, port=args.port)
    status = anonymous.session.get(f"{anonymous.baseurl}/sd-models").status_code
    check(status == 401, f"GET sd-models without a key: expected 401, got {status}")
    try:
        anonymous.txt2img(prompt="no key", steps=args.steps)
        check(False, "txt2img without a key succeeded")
    except RuntimeError as e:
        check(e.args and e.args[0] == 401, f"txt2img without a key: expected a 401 error, got {e.args!r:.200}")

    api = webuiapi.WebUIApi(host=args.host, port=args.port)
    api.set_auth("user", args.key)

    # txt2img: images as PIL images with the A1111 infotext, parameters, info parsed as JSON.
    prompt = "a red fox in the snow"
    result = api.txt2img(prompt=prompt, steps=args.steps, width=64, height=64, seed=42)
    check(isinstance(result.image, Image.Image), f"txt2img: .image is {type(result.image)}, not a PIL image")
    check(len(result.images) == 1, f"txt2img: expected 1 image, got {len(result.images)}")
    check(isinstance(result.info, dict), f"txt2img: .info should be the info JSON string parsed, got {result.info!r:.200}")
    if isinstance(result.info, dict):
        check(result.info.get("prompt") == prompt, f"txt2img: info.prompt is {result.info.get('prompt')!r}")
    if has_keys(result.parameters, ["prompt", "steps", "width", "height", "sampler_name", "seed", "enable_hr"], "txt2img parameters"):
        check(result.parameters["prompt"] == prompt, f"txt2img: parameters.prompt is {result.parameters['prompt']!r}")
        check(result.parameters["steps"] == args.steps, f"txt2img: parameters.steps is {result.parameters['steps']!r}")
    infotext = result.image.info.get("parameters", "")
    check(f"Steps: {args.steps}" in infotext, f"txt2img: the PNG's parameters chunk lacks 'Steps: {args.steps}': {infotext!r:.200}")

    # img2img from that image.
    second = api.img2img(images=[result.image], prompt="the same fox at night", steps=args.steps, denoising_strength=0.5, width=64, height=64)
    check(isinstance(second.image, Image.Image), "img2img: .image is not a PIL image")
    if has_keys(second.parameters, ["denoising_strength", "init_images", "include_init_images"], "img2img parameters"):
        check(second.parameters["denoising_strength"] == 0.5, f"img2img: parameters.denoising_strength is {second.parameters['denoising_strength']!r}")
        check(second.parameters["init_images"] is None, "img2img: init_images echoed without include_init_images")

    # Lists.
    models = api.get_sd_models()
    if check(isinstance(models, list) and models, f"sd-models: expected a non-empty list, got {models!r:.200}"):
        for m in models:
            has_keys(m, ["title", "model_name", "hash", "sha256", "filename", "config"], "sd-models item")
    samplers = api.get_samplers()
    for s in samplers if isinstance(samplers, list) else []:
        has_keys(s, ["name", "aliases", "options"], "samplers item")
    names = api.util_get_sampler_names()
    check("Euler a" in names and "DPM++ 2M" in names, f"samplers: expected Euler a and DPM++ 2M among {names}")
    schedulers = api.get_schedulers()
    for s in schedulers if isinstance(schedulers, list) else []:
        has_keys(s, ["name", "label", "aliases", "default_rho", "need_inner_model"], "schedulers item")
    check("karras" in api.util_get_scheduler_names(), "schedulers: karras is not listed")

    # Options: switch the model with webuiapi's own helper, read it back, switch back.
    options = api.get_options()
    has_keys(options, ["sd_model_checkpoint", "sd_checkpoint_hash", "CLIP_stop_at_last_layers", "samples_format"], "options")
    titles = api.util_get_model_names()
    if titles:
        original = api.util_get_current_model()
        target = next((t for t in titles if t != original), original)
        api.util_set_model(target)
        check(api.util_get_current_model() == target, f"options: the model is {api.util_get_current_model()!r} after util_set_model({target!r})")
        switched = api.txt2img(prompt=prompt, steps=args.steps, width=64, height=64)
        check(isinstance(switched.image, Image.Image), "txt2img after switching the model: no image")
        api.set_options({"sd_model_checkpoint": original})
        check(api.util_get_current_model() == original, f"options: could not switch back to {original!r}")

    # Progress with nothing running, and interrupt.
    progress = api.get_progress()
    if has_keys(progress, ["progress", "eta_relative", "state", "current_image", "textinfo"], "progress"):
        has_keys(progress["state"], ["skipped", "interrupted", "job", "job_count", "job_timestamp", "job_no", "sampling_step", "sampling_steps"], "progress.state")
        check(progress["state"].get("job_count") == 0, f"progress: job_count is {progress['state'].get('job_count')!r} with nothing running")
    check(api.interrupt() == {}, "interrupt: expected {}")

    # png-info on the generated image.
    info = api.png_info(result.image)
    check(f"Steps: {args.steps}" in str(info.info), f"png-info: info is {info.info!r:.200}")
    parsed = info.json.get("parameters", {})
    check(parsed.get("Prompt") == prompt, f"png-info: parameters.Prompt is {parsed.get('Prompt')!r}")
    check(parsed.get("Steps") == str(args.steps), f"png-info: parameters.Steps is {parsed.get('Steps')!r}")
    check(parsed.get("Size-1") is not None, f"png-info: parameters lacks Size-1: {parsed!r:.300}")

    if FAILURES:
        print(f"webuiapi_check: {len(FAILURES)} mismatch(es)", file=sys.stderr)
        return 1
    print("webuiapi_check: every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
