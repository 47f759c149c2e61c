# Shared by infra/local/*-server.sh (sourced, not run): a server is a process group whose leader's
# PID is in a PID file; it is found and stopped by that PID only, never by name.

# pid_of_server PIDFILE PATTERN: print the PID in PIDFILE if that process runs and its command line
# contains PATTERN (a stale file naming some other process is not ours).
pid_of_server() {
  local pidfile="$1" pattern="$2" pid
  [[ -f "$pidfile" ]] || return 1
  pid="$(cat "$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  ps -p "$pid" -o command= 2>/dev/null | grep -q -- "$pattern" || return 1
  echo "$pid"
}

# stop_group PID SECONDS: TERM the process group PID leads, wait up to SECONDS, then KILL it.
stop_group() {
  local pid="$1" seconds="$2"
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 $((seconds * 4))); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.25
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
}
