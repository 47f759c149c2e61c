#!/usr/bin/env bash
# Start or stop a shared MLflow tracking server on 127.0.0.1, without Docker.
#
#   infra/local/mlflow-server.sh start  [DIR] [PORT] [OPTIONS]   # default DIR=recur-runs/server PORT=5001
#   infra/local/mlflow-server.sh stop   [DIR]
#   infra/local/mlflow-server.sh status [DIR]
# Then: export MLFLOW_TRACKING_URI=http://127.0.0.1:5001
#
# OPTIONS (the variable in brackets is read when the option is not given):
#   --backend-store-uri URI      [MLFLOW_BACKEND_STORE_URI] runs and the model registry; default
#                                sqlite:///DIR/mlflow.db. PostgreSQL: postgresql://USER@HOST:5432/DB
#                                with the password in PGPASSWORD or ~/.pgpass (driver: pip install
#                                "psycopg[binary]"). A URI with a password in it is refused as an
#                                option (it would show in `ps`); put it in MLFLOW_BACKEND_STORE_URI.
#   --artifacts-destination URI  [MLFLOW_ARTIFACTS_DESTINATION] where the server stores the artifacts
#                                it proxies; default DIR/artifacts. s3://bucket/prefix writes to S3 with
#                                AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_* and MLFLOW_S3_ENDPOINT_URL
#                                (an S3-compatible endpoint) from the environment, never from options.
#   --basic-auth                 [RECUR_MLFLOW_BASIC_AUTH=1] MLflow's basic-auth app: every request
#                                needs a user (401 without). The admin user is created on the first
#                                start from MLFLOW_AUTH_ADMIN_USERNAME (default admin) and
#                                MLFLOW_AUTH_ADMIN_PASSWORD (>= 12 characters; later starts ignore it).
#                                Users live in DIR/basic_auth.db (config DIR/basic_auth.ini, or your
#                                own file in MLFLOW_AUTH_CONFIG_PATH); the CSRF key is
#                                MLFLOW_FLASK_SERVER_SECRET_KEY, else one generated in
#                                DIR/flask-secret-key. Clients: MLFLOW_TRACKING_USERNAME/PASSWORD.
#   --allowed-hosts LIST         [MLFLOW_SERVER_ALLOWED_HOSTS] Host headers the server answers (others
#                                get 403, against DNS rebinding); default 127.0.0.1:PORT,localhost:PORT
#   --workers N                  [RECUR_MLFLOW_WORKERS] uvicorn workers; default 2
#
# The server runs in its own process group; its PID is in DIR/mlflow.pid and `stop` ends that
# group (the server and its workers), never processes found by name. Python: $PYTHON, else
# `python` on PATH (activate the venv first: source .venv/bin/activate).
set -euo pipefail
# shellcheck source=infra/local/server-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/server-lib.sh"

usage() { sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

action="${1:-}"
[[ "$action" == start || "$action" == stop || "$action" == status ]] || usage
shift
dir="recur-runs/server"
port="5001"
if [[ $# -gt 0 && "$1" != --* ]]; then dir="$1"; shift; fi
if [[ $# -gt 0 && "$1" != --* ]]; then port="$1"; shift; fi
backend_uri="${MLFLOW_BACKEND_STORE_URI:-}"
artifacts="${MLFLOW_ARTIFACTS_DESTINATION:-}"
basic_auth="${RECUR_MLFLOW_BASIC_AUTH:-0}"
allowed_hosts="${MLFLOW_SERVER_ALLOWED_HOSTS:-}"
workers="${RECUR_MLFLOW_WORKERS:-2}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --backend-store-uri)
      [[ $# -ge 2 ]] || usage
      if [[ "$2" =~ ://[^/@]*:[^/@]*@ ]]; then
        echo "refusing a password in --backend-store-uri (it would show in ps): put it in PGPASSWORD" \
             "or ~/.pgpass, or the whole URI in MLFLOW_BACKEND_STORE_URI" >&2
        exit 2
      fi
      backend_uri="$2"; shift 2 ;;
    --artifacts-destination) [[ $# -ge 2 ]] || usage; artifacts="$2"; shift 2 ;;
    --basic-auth) basic_auth=1; shift ;;
    --allowed-hosts) [[ $# -ge 2 ]] || usage; allowed_hosts="$2"; shift 2 ;;
    --workers) [[ $# -ge 2 ]] || usage; workers="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "unknown option $1" >&2; usage ;;
  esac
done
[[ "$port" =~ ^[0-9]+$ ]] || { echo "PORT must be a number, got $port" >&2; exit 2; }
pidfile="$dir/mlflow.pid"

# The PID file names the process group leader; a PID reused by another program is not ours.
our_pid() { pid_of_server "$pidfile" "mlflow server"; }

case "$action" in
  status)
    if pid="$(our_pid)"; then echo "running (pid $pid) on $(cat "$dir/mlflow.url")"; else echo "not running"; exit 1; fi ;;
  stop)
    if pid="$(our_pid)"; then
      stop_group "$pid" 30
      rm -f "$pidfile" "$dir/mlflow.url"; echo "stopped $pid"
    else
      rm -f "$pidfile" "$dir/mlflow.url"; echo "not running"
    fi ;;
  start)
    if pid="$(our_pid)"; then echo "already running (pid $pid) on $(cat "$dir/mlflow.url")"; exit 0; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "port $port on 127.0.0.1 is already in use" >&2; exit 1
    fi
    python="${PYTHON:-python}"
    if ! "$python" -c "import mlflow" 2>/dev/null; then
      echo "$python cannot import mlflow: activate the venv (source .venv/bin/activate) or set PYTHON" >&2
      exit 1
    fi
    umask 077  # databases, user store and key readable by this user only
    mkdir -p "$dir"
    root="$(cd "$dir" && pwd)"
    [[ -n "$backend_uri" ]] || backend_uri="sqlite:///$root/mlflow.db"
    [[ -n "$artifacts" ]] || { mkdir -p "$root/artifacts"; artifacts="$root/artifacts"; }
    [[ -n "$allowed_hosts" ]] || allowed_hosts="127.0.0.1:$port,localhost:$port"
    args=(-m mlflow server --host 127.0.0.1 --port "$port" --artifacts-destination "$artifacts"
          --allowed-hosts "$allowed_hosts" --workers "$workers")
    # Names only go to the child's environment; none of these values is printed.
    env_vars=(MLFLOW_BACKEND_STORE_URI="$backend_uri"
              MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
              MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}")
    if [[ "$basic_auth" == 1 ]]; then
      if ! "$python" -c "import flask_wtf" 2>/dev/null; then
        echo "--basic-auth needs Flask-WTF: pip install 'mlflow[auth]'" >&2; exit 1
      fi
      auth_config="${MLFLOW_AUTH_CONFIG_PATH:-$root/basic_auth.ini}"
      if [[ -z "${MLFLOW_AUTH_CONFIG_PATH:-}" ]]; then
        # no password in this file: the admin's comes from MLFLOW_AUTH_ADMIN_PASSWORD
        cat >"$auth_config" <<EOF
[mlflow]
default_permission = READ
database_uri = sqlite:///$root/basic_auth.db
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
        if [[ ! -s "$root/basic_auth.db" ]]; then
          password="${MLFLOW_AUTH_ADMIN_PASSWORD:-}"
          if [[ ${#password} -lt 12 ]]; then
            echo "first start with --basic-auth: export MLFLOW_AUTH_ADMIN_PASSWORD (at least 12" \
                 "characters) for the admin user" >&2
            exit 1
          fi
        fi
      fi
      secret_key="${MLFLOW_FLASK_SERVER_SECRET_KEY:-}"
      if [[ -z "$secret_key" ]]; then
        [[ -s "$root/flask-secret-key" ]] ||
          "$python" -c "import secrets; print(secrets.token_hex(32))" >"$root/flask-secret-key"
        secret_key="$(cat "$root/flask-secret-key")"
      fi
      args+=(--app-name basic-auth)
      env_vars+=(MLFLOW_AUTH_CONFIG_PATH="$auth_config" MLFLOW_FLASK_SERVER_SECRET_KEY="$secret_key")
    fi
    # set -m: the server gets its own process group (pgid = its pid), so `stop` ends all of it
    set -m
    env "${env_vars[@]}" nohup "$python" "${args[@]}" >"$root/server.log" 2>&1 </dev/null &
    pid=$!
    set +m
    echo "$pid" >"$pidfile"
    echo "http://127.0.0.1:$port" >"$root/mlflow.url"
    for _ in $(seq 1 240); do
      if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$pidfile" "$root/mlflow.url"
        echo "MLflow exited; see $dir/server.log" >&2; tail -n 5 "$root/server.log" >&2; exit 1
      fi
      if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
        what="backend ${backend_uri%%:*}, artifacts ${artifacts}"
        [[ "$basic_auth" == 1 ]] && what="$what, basic auth"
        echo "MLflow on http://127.0.0.1:$port (pid $pid, $what, log $dir/server.log)"; exit 0
      fi
      sleep 0.5
    done
    echo "MLflow did not become healthy in 120 s; see $dir/server.log (still running: $0 stop $dir)" >&2
    exit 1 ;;
esac
