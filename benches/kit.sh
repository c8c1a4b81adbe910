# Sourced by benches/load.sh and scripts/build-pgo: tools, ports, and examples/loadkit.rs's
# peers (a minimal Step Functions upstream, two OIDC issuers, 16 callers' tokens, stepgate
# workspaces). Both keep the PIDs of what they start in PIDS and stop them on exit
# (`trap stop_started EXIT`).

need() { command -v "$1" >/dev/null 2>&1; }

# ensure_tools CMD...: installs the missing ones (Debian packages of the same names) when root
# with apt-get, else stops with what to install.
ensure_tools() {
  local missing=() c
  for c in "$@"; do need "$c" || missing+=("$c"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if need apt-get && [ "$(id -u)" = 0 ]; then
    echo "installing ${missing[*]} (Debian packages)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null; }
  else
    echo "error: $(basename "$0") needs ${missing[*]} (Debian: apt-get install ${missing[*]}) and could not install them" >&2
    exit 2
  fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
  echo $((20000 + RANDOM % 20000)); }

# start_loadkit LOG COMMAND...: runs loadkit (COMMAND, with its launcher and arguments) in the
# background, adds it to PIDS, and waits (up to 30 s) until it has written its workspaces.
start_loadkit() {
  local log=$1
  shift
  "$@" >"$log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 300); do grep -q ready "$log" && return 0; sleep 0.1; done
  cat "$log" >&2
  exit 2
}

# stop_started: stops every process PIDS holds and waits for them.
stop_started() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}

# wait_ready PORT LOG: waits (up to 30 s) until the stepgate on 127.0.0.1:PORT answers /readyz
# as ready; else shows its LOG and stops.
wait_ready() {
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$1/readyz" | grep -q '"ready":true' && return 0
    sleep 0.1
  done
  echo "error: stepgate on port $1 did not get ready" >&2
  cat "$2" >&2
  exit 2
}
