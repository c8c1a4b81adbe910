#!/usr/bin/env bash
# User-space instructions per request of stepgate binaries (valgrind's callgrind), in the shared
# harness's setting: the one measure of the request path that does not move with this VM's
# speed, for telling a small change from the drift that `benches/ab.sh` sees.
#
#   benches/instructions.sh BINARY [MORE...]      # N=2000 WARM=300 by default; TOP=25 lists
#                                                 # the costliest functions of each binary
#
# Needs a writable copy of ../shared/bench that has run once (see the top of benches/ab.sh);
# BENCH_DIR points at it. Each binary runs the harness's stepgate.toml (RS256 JWT, Cedar,
# durable audit, SigV4) on a port of its own with a fresh audit folder, on one runtime thread
# (`STEPGATE_RUNTIME=current_thread`), under `valgrind --tool=callgrind` with instrumentation off;
# one keep-alive client posts the harness's StartExecution body WARM times, instrumentation
# goes on for the next N, and the dump's total over N is the figure (the audit writer's share
# included: with one client every request's decision is one group commit). Every answer must
# be 200, else the run stops. valgrind has no SHA extensions: SHA-256 shows as software rounds
# (~2.7k instructions per 64-byte block) where the CPU takes a few hundred cycles.
# Prints one line per binary. Everything it starts is stopped.
set -euo pipefail

(($# >= 1)) || { sed -n '2,/^# Prints one line/p' "$0"; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/stepgate-bench}
N=${N:-2000}
WARM=${WARM:-300}
TOP=${TOP:-0}
. "$ROOT/benches/kit.sh"
harness_copy_ready "$BENCH_DIR"
absolute_binaries "$@"
set -- "${BINS[@]}"
ensure_tools valgrind

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/stepgate-instr.XXXXXX")
PIDS=()
trap 'stop_started; rm -rf "$WORK"' EXIT
UP_PORT=$(free_port)
SG_PORT=$(free_port)
harness_workspace "$BENCH_DIR" "$WORK" "$SG_PORT" "$UP_PORT"
start_harness_upstream "$BENCH_DIR" "$UP_PORT" "$WORK/upstream.log"

# post COUNT: COUNT requests on one keep-alive connection; stops unless every answer is 200.
post() {
  python3 - "$SG_PORT" "$TOKEN" "$1" <<'PY'
import http.client, sys
port, token, count = int(sys.argv[1]), open(sys.argv[2]).read().strip(), int(sys.argv[3])
body = ('{"stateMachineArn":"arn:aws:states:us-east-1:123456789012:stateMachine:nightly-etl",'
        '"name":"bench-run-000001","input":"{\\"date\\":\\"2026-11-24\\",'
        '\\"source\\":\\"s3://bench-bucket/in/\\",\\"rows\\":1000}"}')
headers = {"Content-Type": "application/x-amz-json-1.0",
           "X-Amz-Target": "AWSStepFunctions.StartExecution",
           "Authorization": "Bearer " + token}
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for i in range(count):
    c.request("POST", "/aws/states", body, headers)
    r = c.getresponse()
    text = r.read()
    if r.status != 200:
        sys.exit(f"request {i}: HTTP {r.status}: {text[:300]!r}")
PY
}

for b in "$@"; do
  rm -rf "$WORK/audit" "$WORK"/cg.out*
  (cd "$WORK" && STEPGATE_RUNTIME=current_thread exec valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$WORK/cg.out" "$b" serve --config stepgate.toml >"$WORK/stepgate.log" 2>&1) &
  p=$!
  PIDS+=("$p")
  wait_ready "$SG_PORT" "$WORK/stepgate.log"
  post "$WARM"
  callgrind_control -i on "$p" >/dev/null
  post "$N"
  callgrind_control -d "$p" >/dev/null
  kill "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  dump=$(find "$WORK" -maxdepth 1 -name 'cg.out.*' | head -n1)
  total=$([[ -n $dump ]] && awk '/^(summary|totals):/ {print $2; exit}' "$dump" || true)
  [[ -n $total ]] || { echo "error: callgrind wrote no dump for $b" >&2; cat "$WORK/stepgate.log" >&2; exit 2; }
  printf '%-40s %8.1fk instructions per request (%d requests, %d warm-up)\n' \
    "$(basename "$b")" "$(echo "$total / $N / 1000" | bc -l)" "$N" "$WARM"
  if ((TOP > 0)); then
    callgrind_annotate --inclusive=no "$dump" 2>/dev/null | sed -n '/^Ir/,$p' | sed -n "3,$((TOP + 2))p"
  fi
done
