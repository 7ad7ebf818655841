#!/usr/bin/env bash
# End to end on built-in defaults, no downloaded weights: a tiny random SD 1 model, an
# inference-server serving it, a webhook-service in front, a local webhook receiver, one job
# submitted over HTTP, and the delivered callback printed. Everything is stopped on exit.
#
#   scripts/demo.sh                      # release build (as a user would run it)
#   SDSERVE_DEMO_PROFILE=dev scripts/demo.sh   # debug build (faster to compile)
#
# Ports: inference 50051, webhook-service gRPC 50052 / HTTP 8080 (their defaults), receiver
# 9999 (SDSERVE_DEMO_RECEIVER_PORT). The images are tiny (64×64) and random-looking: the
# model's weights are random.
set -euo pipefail

cd "$(dirname "$0")/.."
PROFILE="${SDSERVE_DEMO_PROFILE:-release}"
RECEIVER_PORT="${SDSERVE_DEMO_RECEIVER_PORT:-9999}"
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
BIN="target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")"

echo "== writing the tiny test model"
"$BIN/inference-server" make-test-model --out "$WORK/sdserve-demo-model"

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

echo "== starting inference-server"
"$BIN/inference-server" serve --listen 127.0.0.1:50051 --model "$WORK/sdserve-demo-model=tiny" --device cpu \
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
  "params": {"prompt": "a tiny red fox", "steps": 4, "width": 64, "height": 64, "seed": 42, "sampler_name": "Euler"},
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
echo "== done; stopping everything"
