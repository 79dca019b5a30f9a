#!/usr/bin/env bash
# The Dockerfile's install steps in a fresh virtual environment (no Docker engine here),
# then the node started as the image starts it: C-ECHO health check, HTTP health, SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(mktemp -d)/venv
DATA=$(mktemp -d)
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --no-cache-dir --requirement requirements.lock
"$VENV/bin/pip" install -q --no-cache-dir --no-deps .
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
HTTP=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export SPACING_SCP_STORAGE_DATA_DIR="$DATA" SPACING_SCP_NODE_PORT="$PORT" SPACING_SCP_HTTP_PORT="$HTTP"
"$VENV/bin/spacing-scp" serve --config config/spacing-scp.toml > "$DATA/node.log" 2>&1 &
PID=$!
# A failing step below must not leave the node running.
trap 'kill -TERM "$PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if "$VENV/bin/spacing-scp" echo --host 127.0.0.1 >/dev/null 2>&1; then break; fi
  sleep 0.2
done
"$VENV/bin/spacing-scp" echo --host 127.0.0.1
python3 -c "import urllib.request,sys; r=urllib.request.urlopen('http://127.0.0.1:$HTTP/health'); sys.exit(0 if b'ok' in r.read() else 1)"
kill -TERM "$PID"
wait "$PID"
echo "container steps: install, C-ECHO health check, HTTP health, SIGTERM exit 0: ok"
