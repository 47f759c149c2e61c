#!/usr/bin/env bash
# Start or stop an S3-compatible endpoint on 127.0.0.1 without Docker: moto's server mode
# (pip install 'moto[server]'; the dev extras have it). For development and tests only: it keeps
# the objects in memory (gone after `stop`), accepts any access key and secret, and anyone on this
# machine can reset it through /moto-api/. Use MinIO (infra/compose) or S3 for data you keep.
#
#   infra/local/s3-server.sh start  [DIR] [PORT] [--bucket NAME]...   # default DIR=recur-runs/s3 PORT=5002
#   infra/local/s3-server.sh stop   [DIR]
#   infra/local/s3-server.sh status [DIR]
# Then point boto3, pyarrow and MLflow at it (moto takes any key; use placeholders, not real ones):
#   export AWS_ENDPOINT_URL_S3=http://127.0.0.1:5002 MLFLOW_S3_ENDPOINT_URL=http://127.0.0.1:5002
#   export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
#
# --bucket NAME (repeatable) creates the bucket once the endpoint answers. The server runs in its
# own process group; its PID is in DIR/s3.pid and `stop` ends that group, never processes found
# by name. Python: $PYTHON, else `python` on PATH (activate the venv first).
set -euo pipefail
# shellcheck source=infra/local/server-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/server-lib.sh"

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

action="${1:-}"
[[ "$action" == start || "$action" == stop || "$action" == status ]] || usage
shift
dir="recur-runs/s3"
port="5002"
if [[ $# -gt 0 && "$1" != --* ]]; then dir="$1"; shift; fi
if [[ $# -gt 0 && "$1" != --* ]]; then port="$1"; shift; fi
buckets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bucket)
      [[ $# -ge 2 ]] || usage
      # S3 bucket naming rules (lowercase letters, digits, dots, hyphens; 3-63 characters)
      [[ "$2" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] || { echo "invalid bucket name: $2" >&2; exit 2; }
      buckets+=("$2"); shift 2 ;;
    -h|--help) usage ;;
    *) echo "unknown option $1" >&2; usage ;;
  esac
done
[[ "$port" =~ ^[0-9]+$ ]] || { echo "PORT must be a number, got $port" >&2; exit 2; }
pidfile="$dir/s3.pid"
url="http://127.0.0.1:$port"

our_pid() { pid_of_server "$pidfile" "moto.server"; }

create_buckets() {
  local bucket code
  for bucket in "${buckets[@]+"${buckets[@]}"}"; do
    # moto accepts unsigned requests; 200 = created, 409 = it exists already
    code="$(curl -s -o /dev/null -w '%{http_code}' -X PUT "$url/$bucket")"
    case "$code" in
      200|409) echo "bucket s3://$bucket" ;;
      *) echo "creating bucket $bucket failed (HTTP $code)" >&2; return 1 ;;
    esac
  done
}

case "$action" in
  status)
    if pid="$(our_pid)"; then echo "running (pid $pid) on $(cat "$dir/s3.url")"; else echo "not running"; exit 1; fi ;;
  stop)
    if pid="$(our_pid)"; then
      stop_group "$pid" 10
      rm -f "$pidfile" "$dir/s3.url"; echo "stopped $pid"
    else
      rm -f "$pidfile" "$dir/s3.url"; echo "not running"
    fi ;;
  start)
    if pid="$(our_pid)"; then
      url="$(cat "$dir/s3.url")"; echo "already running (pid $pid) on $url"; create_buckets; exit 0
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "port $port on 127.0.0.1 is already in use" >&2; exit 1
    fi
    python="${PYTHON:-python}"
    if ! "$python" -c "import moto.server" 2>/dev/null; then
      echo "$python cannot import moto.server: pip install 'moto[server]' (or activate the venv)" >&2
      exit 1
    fi
    mkdir -p "$dir"
    set -m  # own process group (pgid = pid), so `stop` ends the server and anything it started
    nohup "$python" -m moto.server -H 127.0.0.1 -p "$port" >"$dir/s3.log" 2>&1 </dev/null &
    pid=$!
    set +m
    echo "$pid" >"$pidfile"
    echo "$url" >"$dir/s3.url"
    for _ in $(seq 1 120); do
      if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$pidfile" "$dir/s3.url"; echo "the S3 server exited; see $dir/s3.log" >&2; exit 1
      fi
      if curl -sf "$url/" >/dev/null 2>&1; then
        echo "S3 endpoint on $url (pid $pid, log $dir/s3.log)"
        create_buckets
        exit 0
      fi
      sleep 0.25
    done
    echo "the S3 server did not answer in 30 s; see $dir/s3.log (still running: $0 stop $dir)" >&2
    exit 1 ;;
esac
