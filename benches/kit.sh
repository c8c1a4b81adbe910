# Sourced by the scripts in benches/ and scripts/build-pgo: tools, ports, examples/loadkit.rs's
# peers (a minimal Step Functions upstream, two OIDC issuers, 16 callers' tokens, stepgate
# workspaces), and the shared harness's setting for benches/ab.sh and benches/instructions.sh.
# They keep the PIDs of what they start in PIDS and stop them on exit (`trap stop_started EXIT`).

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
  poll_until 30 "loadkit did not write its workspaces" "$log" grep -q ready "$log"
}

# stop_started: stops every process PIDS holds and waits for them.
stop_started() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}

# poll_until SECONDS WHAT LOG CMD...: runs CMD every 0.1 s until it succeeds; after SECONDS
# says "error: WHAT", shows LOG (when given) and stops.
poll_until() {
  local seconds=$1 what=$2 log=$3
  shift 3
  for _ in $(seq 1 $((seconds * 10))); do
    "$@" && return 0
    sleep 0.1
  done
  echo "error: $what" >&2
  if [[ -n $log ]]; then cat "$log" >&2; fi
  exit 2
}

# answers URL: something listens there and answers HTTP (any status).
answers() { curl -s -o /dev/null "$1"; }
# is_ready PORT: the stepgate on 127.0.0.1:PORT says it is ready (/readyz).
is_ready() { curl -sf "http://127.0.0.1:$1/readyz" | grep -q '"ready":true'; }

# wait_for URL [LOG]: waits (up to 60 s) until URL answers; else shows LOG and stops.
wait_for() { poll_until 60 "$1 did not come up" "${2:-}" answers "$1"; }

# wait_ready PORT LOG: waits (up to 30 s) until the stepgate on 127.0.0.1:PORT answers /readyz
# as ready; else shows its LOG and stops.
wait_ready() { poll_until 30 "stepgate on port $1 did not get ready" "$2" is_ready "$1"; }

# harness_copy_ready DIR: stops unless DIR is a writable copy of ../shared/bench that has run
# once (its upstream built, its tokens in .run/jwt); sets TOKEN (its RS256 caller token) and
# UPSTREAM_BIN (its workflow API and issuer-keys server).
harness_copy_ready() {
  local f
  TOKEN=$1/.run/jwt/token.rs256
  UPSTREAM_BIN=$1/upstream/target/release/bench-upstream
  for f in "$TOKEN" "$UPSTREAM_BIN" "$1/post.lua" "$1/stepgate/stepgate.toml"; do
    [[ -e $f ]] || { echo "missing $f: run the harness once in $1 (see the top of benches/ab.sh)" >&2; exit 2; }
  done
}

# start_harness_upstream DIR PORT LOG: starts the harness's upstream (after harness_copy_ready)
# pinned on CPU 1 as the harness pins it, on 127.0.0.1:PORT with DIR's issuer keys; adds it to
# PIDS, sets UPSTREAM_PID and waits (up to 10 s) until it serves its keys, else shows LOG and
# stops.
start_harness_upstream() {
  UPSTREAM_ADDR=127.0.0.1:$2 BENCH_ISSUER_DIR=$1/.run/jwt taskset -c 1 "$UPSTREAM_BIN" >"$3" 2>&1 &
  UPSTREAM_PID=$!
  PIDS+=("$UPSTREAM_PID")
  poll_until 10 "the harness's upstream on port $2 did not start" "$3" answers "http://127.0.0.1:$2/jwks.json"
}

# absolute_binaries BINARY...: stops unless each is executable; BINS holds their absolute paths
# (each runs from a work folder).
absolute_binaries() {
  local b
  BINS=()
  for b in "$@"; do
    [[ -x $b ]] || { echo "not an executable: $b" >&2; exit 2; }
    BINS+=("$(realpath "$b")")
  done
}

# harness_workspace DIR WORK SG_PORT UP_PORT: the harness's stepgate configuration (everything on)
# in WORK, listening on SG_PORT, its workflow API and issuer keys at UP_PORT (the issuer keeps
# its name).
harness_workspace() {
  cp -r "$1/stepgate/policies" "$2/"
  sed -e "s/127.0.0.1:18090/127.0.0.1:$3/" \
    -e "s#endpoint = \"http://127.0.0.1:18080\"#endpoint = \"http://127.0.0.1:$4\"#" \
    -e "s#^groups_claim = \"groups\"#groups_claim = \"groups\"\njwks_uri = \"http://127.0.0.1:$4/jwks.json\"#" \
    "$1/stepgate/stepgate.toml" >"$2/stepgate.toml"
}
