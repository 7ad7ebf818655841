#!/usr/bin/env bash
# End to end on built-in defaults, no downloaded weights: an inference-server serving its
# built-in model `sdserve-shapes` (a tiny SD 1.x model trained by tools/train-default-model), a
# webhook-service in front, a local webhook receiver, one job submitted over HTTP, the delivered
# callback printed, and its image fetched and written as PNG (path printed). Everything is
# stopped on exit.
#
#   scripts/demo.sh                      # release build (as a user would run it)
#   SDSERVE_DEMO_PROFILE=dev scripts/demo.sh   # debug build (faster to compile)
#
# Ports: inference 50051, webhook-service gRPC 50052 / HTTP 8080 (their defaults), receiver
# 9999 (SDSERVE_DEMO_RECEIVER_PORT). The image is 64×64 (the size the model was trained at) and
# is written to target/sdserve-demo.png (SDSERVE_DEMO_OUT). The prompt is SDSERVE_DEMO_PROMPT
# (default "a red circle on a blue background").
set -euo pipefail

cd "$(dirname "$0")/.."
PROFILE="${SDSERVE_DEMO_PROFILE:-release}"
RECEIVER_PORT="${SDSERVE_DEMO_RECEIVER_PORT:-9999}"
OUT_PNG="${SDSERVE_DEMO_OUT:-target/sdserve-demo.png}"
PROMPT="${SDSERVE_DEMO_PROMPT:-a red circle on a blue background}"
WORK="$(mktemp -d -t sdserve-demo.XXXXXX)"
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_for() { # wait_for DESCRIPTION COMMAND...: retries for 120 s
  local what="$1"; shift
  for _ in $(seq 1 240); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "demo: timed out waiting for $what" >&2
  return 1
}

echo "== building ($PROFILE)"
cargo build --profile "$PROFILE" -p inference-server -p webhook-service --bins
BIN="${CARGO_TARGET_DIR:-target}/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")"

echo "== starting the webhook receiver on 127.0.0.1:$RECEIVER_PORT"
python3 - "$RECEIVER_PORT" "$WORK/callback.json" <<'PY' &
import http.server, sys
port, out = int(sys.argv[1]), sys.argv[2]
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
        with open(out + ".tmp", "wb") as f:
            f.write(body)
        import os; os.replace(out + ".tmp", out)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Hook).serve_forever()
PY
PIDS+=($!)

echo "== starting inference-server (no --model: the built-in sdserve-shapes)"
SDSERVE_CACHE_DIR="$WORK/cache" "$BIN/inference-server" serve --listen 127.0.0.1:50051 --device cpu \
  2> "$WORK/inference.log" &
PIDS+=($!)

echo "== creating an API key (webhook-service keys create prints the key and nothing else)"
API_KEY="$("$BIN/webhook-service" keys create --name demo --database "sqlite://$WORK/webhooks.db")"

echo "== starting webhook-service"
"$BIN/webhook-service" serve --database "sqlite://$WORK/webhooks.db" \
  --allow-http --allow-private 127.0.0.0/8 2> "$WORK/webhook.log" &
PIDS+=($!)
wait_for "webhook-service" curl -sf http://127.0.0.1:8080/healthz
wait_for "inference-server" bash -c 'exec 3<>/dev/tcp/127.0.0.1/50051'

echo "== submitting a job"
curl -sS -X POST http://127.0.0.1:8080/v1/jobs -H "authorization: Bearer $API_KEY" \
  -H 'content-type: application/json' -d '{
  "params": {"prompt": "'"$PROMPT"'", "steps": 20, "cfg_scale": 6, "width": 64, "height": 64, "seed": 42, "sampler_name": "DPM++ 2M"},
  "webhook": {"url": "http://127.0.0.1:'"$RECEIVER_PORT"'/hook", "format": "standard"}
}'
echo

echo "== waiting for the callback"
if ! wait_for "the callback" test -s "$WORK/callback.json"; then
  echo "--- inference-server log"; tail -20 "$WORK/inference.log"
  echo "--- webhook-service log"; tail -20 "$WORK/webhook.log"
  exit 1
fi
echo "== delivered callback (base64 fields shortened)"
python3 - "$WORK/callback.json" <<'PY'
import json, sys
def short(v):
    if isinstance(v, dict): return {k: short(x) for k, x in v.items()}
    if isinstance(v, list): return [short(x) for x in v]
    if isinstance(v, str) and len(v) > 200: return v[:60] + "...(%d chars)" % len(v)
    return v
print(json.dumps(short(json.load(open(sys.argv[1]))), indent=2))
PY
echo "== fetching the delivered image"
URL="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["data"]["images"][0]["url"])' "$WORK/callback.json")"
case "$URL" in /*) URL="http://127.0.0.1:8080$URL" ;; esac
mkdir -p "$(dirname "$OUT_PNG")"
curl -sSf "$URL" -o "$OUT_PNG"
echo "== the image of \"$PROMPT\": $OUT_PNG"
echo "== done; stopping everything"
