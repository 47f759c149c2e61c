#!/usr/bin/env bash
# Start or stop a shared MLflow tracking server on 127.0.0.1 (sqlite backend, proxied artifacts).
#   infra/local/mlflow-server.sh start [DIR] [PORT]   # default DIR=recur-runs/server PORT=5001
#   infra/local/mlflow-server.sh stop  [DIR]
# Then: export MLFLOW_TRACKING_URI=http://127.0.0.1:5001
set -euo pipefail
action="${1:?start|stop}"
dir="${2:-recur-runs/server}"
port="${3:-5001}"
pidfile="$dir/mlflow.pid"
case "$action" in
  start)
    mkdir -p "$dir/artifacts"
    if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "already running (pid $(cat "$pidfile"))"; exit 0
    fi
    nohup python -m mlflow server --host 127.0.0.1 --port "$port" \
      --backend-store-uri "sqlite:///$(cd "$dir" && pwd)/mlflow.db" \
      --artifacts-destination "$(cd "$dir" && pwd)/artifacts" >"$dir/server.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 120); do
      if curl -sf "http://127.0.0.1:$port/health" >/dev/null; then
        echo "MLflow on http://127.0.0.1:$port (pid $(cat "$pidfile"), log $dir/server.log)"; exit 0
      fi
      sleep 0.5
    done
    echo "MLflow did not become healthy; see $dir/server.log" >&2; exit 1 ;;
  stop)
    if [[ -f "$pidfile" ]]; then
      pid="$(cat "$pidfile")"
      # the server's gunicorn/uvicorn workers are its children: stop the whole group by pid
      pkill -TERM -P "$pid" 2>/dev/null || true
      kill "$pid" 2>/dev/null || true
      rm -f "$pidfile"; echo "stopped $pid"
    else
      echo "not running"
    fi ;;
  *) echo "usage: $0 start|stop [DIR] [PORT]" >&2; exit 2 ;;
esac
