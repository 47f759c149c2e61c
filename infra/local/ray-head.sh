#!/usr/bin/env bash
# Start or stop a one-machine Ray cluster (a head node) for `recur submit`, without Docker, with
# its dashboard and Jobs API on 127.0.0.1 and Ray's token authentication on.
#
#   infra/local/ray-head.sh start  [DIR] [DASHBOARD_PORT] [-- RAY_START_OPTION...]   # default DIR=recur-runs/ray-head PORT=8265
#   infra/local/ray-head.sh stop   [DIR]
#   infra/local/ray-head.sh status [DIR]
# Then, in the shell that submits:
#   export RAY_ADDRESS=http://127.0.0.1:8265 RAY_AUTH_TOKEN_PATH=$PWD/recur-runs/ray-head/auth_token
#   recur submit configs/quickstart.yaml --follow
#
# The token is DIR/auth_token (made on first start, mode 600); the head refuses the Jobs API and
# its gRPC ports to anyone without it. Ray's GCS and raylet still listen on every interface in this
# Ray version whatever --node-ip-address says: the token is what guards them (block Ray's ports
# with the host firewall on a machine others can reach). Options after `--` go to `ray start`
# (e.g. --num-cpus 2, or the ports of a second head on the same machine). `ray start --block` runs
# as the leader of its own process group with every Ray process of the head in it; its PID is in
# DIR/ray.pid and `stop` ends that group, never processes found by name (so never another Ray).
# The `ray` command: $RAY, else the one next to $PYTHON, else `ray` on PATH (activate the venv).
set -euo pipefail
# shellcheck source=infra/local/server-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/server-lib.sh"

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

action="${1:-}"
[[ "$action" == start || "$action" == stop || "$action" == status ]] || usage
shift
dir="recur-runs/ray-head"
port="8265"
if [[ $# -gt 0 && "$1" != -* ]]; then dir="$1"; shift; fi
if [[ $# -gt 0 && "$1" != -* ]]; then port="$1"; shift; fi
extra=()
if [[ $# -gt 0 ]]; then
  [[ "$1" == "--" ]] || { [[ "$1" == -h || "$1" == --help ]] && usage; echo "unknown option $1" >&2; usage; }
  shift
  extra=("$@")
fi
[[ "$port" =~ ^[0-9]+$ ]] || { echo "DASHBOARD_PORT must be a number, got $port" >&2; exit 2; }
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
pidfile="$dir/ray.pid"
url="http://127.0.0.1:$port"

our_pid() { pid_of_server "$pidfile" "ray start --head"; }

case "$action" in
  status)
    if pid="$(our_pid)"; then echo "running (pid $pid): dashboard and Jobs API on $(cat "$dir/ray.url")"
    else echo "not running"; exit 1; fi ;;
  stop)
    if pid="$(our_pid)"; then
      # TERM to `ray start --block` alone: it shuts its Ray processes down in order (a TERM to the
      # whole group at once leaves some hanging); what is left after 30 s is killed with the group
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 120); do
        kill -0 -- "-$pid" 2>/dev/null || break
        sleep 0.25
      done
      kill -KILL -- "-$pid" 2>/dev/null || true
      temp="$(cat "$dir/ray.tmp" 2>/dev/null || true)"
      [[ "$temp" == /tmp/recur-ray-* ]] && rm -rf "$temp"
      rm -f "$pidfile" "$dir/ray.url" "$dir/ray.tmp"; echo "stopped $pid"
    else
      rm -f "$pidfile" "$dir/ray.url" "$dir/ray.tmp"; echo "not running"
    fi ;;
  start)
    if pid="$(our_pid)"; then echo "already running (pid $pid) on $(cat "$dir/ray.url")"; exit 0; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "port $port on 127.0.0.1 is already in use" >&2; exit 1
    fi
    if [[ -n "${RAY:-}" ]]; then ray="$RAY"
    elif [[ -n "${PYTHON:-}" && -x "$(dirname "$PYTHON")/ray" ]]; then ray="$(dirname "$PYTHON")/ray"
    else ray="$(command -v ray || true)"; fi
    [[ -n "$ray" ]] || { echo "no ray command: pip install 'ray[default]' (or activate the venv)" >&2; exit 1; }
    token="$dir/auth_token"
    if [[ ! -s "$token" ]]; then
      (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$token")
    fi
    chmod 600 "$token"
    # Ray's socket paths are limited to ~100 characters: a short temp dir, whatever DIR is
    temp="$(mktemp -d /tmp/recur-ray-XXXXXX)"
    echo "$temp" >"$dir/ray.tmp"
    set -m  # own process group (pgid = pid), so `stop` ends the head and every process it started
    RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$token" nohup "$ray" start --head --block \
      --dashboard-host 127.0.0.1 --dashboard-port "$port" --node-ip-address 127.0.0.1 \
      --include-dashboard true --temp-dir "$temp" --disable-usage-stats "${extra[@]+"${extra[@]}"}" \
      >"$dir/ray.log" 2>&1 </dev/null &
    pid=$!
    set +m
    echo "$pid" >"$pidfile"
    echo "$url" >"$dir/ray.url"
    for _ in $(seq 1 480); do
      if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$pidfile" "$dir/ray.url"; echo "ray start exited; see $dir/ray.log" >&2; exit 1
      fi
      # any HTTP answer (401 without the token) means the dashboard is up
      code="$(curl -s -o /dev/null -w '%{http_code}' "$url/api/version" || true)"
      if [[ "$code" != 000 ]]; then
        echo "Ray head on this machine (pid $pid, log $dir/ray.log): dashboard and Jobs API on $url"
        echo "token authentication on; the token is in $token. To submit:"
        echo "  export RAY_ADDRESS=$url RAY_AUTH_TOKEN_PATH=$token"
        exit 0
      fi
      sleep 0.25
    done
    echo "the Ray dashboard did not answer in 120 s; see $dir/ray.log (still running: $0 stop $dir)" >&2
    exit 1 ;;
esac
