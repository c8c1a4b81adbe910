#!/usr/bin/env bash
# Load benchmark of stepgate against the plain reverse proxy people already run (nginx), all on
# loopback. One command, from a fresh clone:
#
#   benches/load.sh                 # DURATION=10 REPS=3 CONNS=32 BIG_CONNS=1000 by default
#
# It builds the release binaries, starts a minimal Step Functions upstream and two OIDC issuers
# (examples/loadkit.rs), stepgate with everything on (two issuers, 10 policies, input schema,
# pinned field, durable audit log, SigV4 to the upstream) and the same at scale (1,000 steps,
# 10,000 policies), and nginx as a plain keep-alive reverse proxy. The same wrk load (CONNS
# connections, 16 callers' tokens in rotation, a ~200-byte JSON start) runs against
# (a) the upstream directly, (b) nginx, (c) stepgate, (d) stepgate at scale, interleaved, REPS
# times, DURATION seconds each, pinned as ../shared/bench pins its peers (wrk on CPU 0, the
# servers on CPU 1; PIN=0 turns it off). Prints requests/s, p50, p99 and CPU per request per
# target (median over the repetitions), the ratios, and stepgate's RSS at idle, after the runs,
# and under BIG_CONNS connections. Everything it starts is stopped on exit.
set -euo pipefail

DURATION=${DURATION:-10}
REPS=${REPS:-3}
CONNS=${CONNS:-32}
BIG_CONNS=${BIG_CONNS:-1000}
THREADS=${THREADS:-1}
# Pinned as ../shared/bench pins its peers: the load generator on LOADGEN_CPUS, the upstream and
# the proxy under test on SERVER_CPUS (one core: throughput ~ 1 / (proxy + upstream CPU per
# request)), so the README's figures and the harness's agree. PIN=0 turns it off.
PIN=${PIN:-1}
LOADGEN_CPUS=${LOADGEN_CPUS:-0}
SERVER_CPUS=${SERVER_CPUS:-1}
if [ "$PIN" = 1 ] && command -v taskset >/dev/null 2>&1; then
  ON_SERVER=(taskset -c "$SERVER_CPUS"); ON_LOAD=(taskset -c "$LOADGEN_CPUS")
else
  ON_SERVER=(); ON_LOAD=()
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
# The work folder sits on the real disk (the audit log must be fdatasync'ed to a disk, not tmpfs).
WORK=${WORK:-$TARGET/load-bench}

. "$(dirname "$0")/kit.sh"
ensure_tools wrk nginx
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
ulimit -n 65536 2>/dev/null || ulimit -n 8192 || true

echo "building release binaries..."
# PROFILE=dist measures the dist profile (fat LTO; ~10 min more to build from cold).
PROFILE=${PROFILE:-release}
(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --profile "$PROFILE" --locked --quiet --bin stepgate --example loadkit)
# STEPGATE_BIN measures a binary built otherwise (the deployment build: scripts/build-pgo).
STEPGATE=${STEPGATE_BIN:-$TARGET/$PROFILE/stepgate}
LOADKIT=$TARGET/$PROFILE/examples/loadkit

rm -rf "$WORK"
mkdir -p "$WORK"
PIDS=()
trap stop_started EXIT INT TERM

UP_PORT=$(free_port); SMALL_PORT=$(free_port); SCALE_PORT=$(free_port); NGINX_PORT=$(free_port)

start_loadkit "$WORK/loadkit.log" "${ON_SERVER[@]}" "$LOADKIT" --dir "$WORK" --upstream-port "$UP_PORT" \
  --small-port "$SMALL_PORT" --scale-port "$SCALE_PORT"

for v in small scale; do
  "$STEPGATE" check --config "$WORK/$v/stepgate.toml" >/dev/null
done

STEPGATE_LOG=warn "${ON_SERVER[@]}" "$STEPGATE" serve --config "$WORK/small/stepgate.toml" 2>"$WORK/small/stepgate.log" &
SG_PID=$!; PIDS+=($SG_PID)
STEPGATE_LOG=warn "${ON_SERVER[@]}" "$STEPGATE" serve --config "$WORK/scale/stepgate.toml" 2>"$WORK/scale/stepgate.log" &
SC_PID=$!; PIDS+=($SC_PID)

# nginx: plain keep-alive reverse proxy, one worker per core as stepgate has one runtime thread
# per core; access log off (stepgate's own log is the audit log, which is on).
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  upstream sfn { server 127.0.0.1:$UP_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://sfn;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
"${ON_SERVER[@]}" "$NGINX" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" &
PIDS+=($!)

wait_for "http://127.0.0.1:$NGINX_PORT/" "$WORK/nginx/error.log"
wait_ready "$SMALL_PORT" "$WORK/small/stepgate.log"
wait_ready "$SCALE_PORT" "$WORK/scale/stepgate.log"
sleep 1
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
rss() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status"; } # kB
SG_IDLE=$(rss $SG_PID VmRSS); SC_IDLE=$(rss $SC_PID VmRSS)

cat >"$WORK/load.lua" <<'EOF'
-- Rotates over every token; the same request bytes go to every target.
local dir = os.getenv("LOAD_DIR")
local f = io.open(dir .. "/body.json"); local body = f:read("*a"); f:close()
local reqs = {}
local i = 0
-- In init, where wrk knows the Host header to add.
init = function(args)
  for t in io.lines(dir .. "/tokens.txt") do
    reqs[#reqs + 1] = wrk.format("POST", os.getenv("LOAD_PATH"), {
      ["Authorization"] = "Bearer " .. t,
      ["Content-Type"] = "application/json",
      ["X-Amz-Target"] = "AWSStepFunctions.StartExecution",
    }, body)
  end
  i = math.random(#reqs)
end
request = function() i = i % #reqs + 1; return reqs[i] end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write, summary.errors.timeout))
end
EOF

PATH_V1=/v1/steps/nightly-load/executions
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, clock ticks
pid_of() { case $1 in stepgate*) [ "$1" = stepgate-scale ] && echo "$SC_PID" || echo "$SG_PID" ;; nginx) cat "$WORK/nginx/nginx.pid" ;; *) echo "" ;; esac; }
run() { # name port conns -> appends "name rps p50 p99 cpu_us_per_request" to results
  local out pid t0 t1 cpu
  pid=$(pid_of "$1"); t0=0; [ -n "$pid" ] && t0=$(ticks "$pid")
  [ "$1" = nginx ] && t0=$(( t0 + $(for c in $(pgrep -P "$pid"); do ticks "$c"; done | awk '{ t += $1 } END { print t + 0 }') ))
  out=$(LOAD_DIR=$WORK LOAD_PATH=$PATH_V1 "${ON_LOAD[@]}" wrk -t"$THREADS" -c"$3" -d"${DURATION}s" --timeout 10s \
    -s "$WORK/load.lua" "http://127.0.0.1:$2" 2>&1 | grep '^RESULT') || { echo "wrk failed against $1" >&2; exit 2; }
  read -r _ n us p50 p99 bad sockerr tmo <<<"$out"
  cpu=0
  if [ -n "$pid" ]; then
    t1=$(ticks "$pid")
    [ "$1" = nginx ] && t1=$(( t1 + $(for c in $(pgrep -P "$pid"); do ticks "$c"; done | awk '{ t += $1 } END { print t + 0 }') ))
    cpu=$(awk -v d=$((t1 - t0)) -v n="$n" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", d / hz * 1e6 / n }')
  fi
  if [ "$bad" -ne 0 ] || [ "$sockerr" -ne 0 ] || [ "$tmo" -ne 0 ]; then
    echo "error: $1: $bad non-2xx answers, $sockerr socket errors, $tmo timeouts" >&2
    exit 2
  fi
  awk -v name="$1" -v n="$n" -v us="$us" -v a="$p50" -v b="$p99" -v c="$cpu" \
    'BEGIN { printf "%s %.0f %d %d %s\n", name, n / (us / 1e6), a, b, c }' >>"$WORK/results"
  tail -n1 "$WORK/results" | awk '{ printf "  %-14s %9s req/s  p50 %6s us  p99 %6s us  CPU %6s us/request\n", $1, $2, $3, $4, $5 }'
}

# Warm-up: every token verified once (the verified-token cache), connections pooled.
for p in $SMALL_PORT $SCALE_PORT $NGINX_PORT; do
  LOAD_DIR=$WORK LOAD_PATH=$PATH_V1 wrk -t1 -c4 -d2s -s "$WORK/load.lua" "http://127.0.0.1:$p" >/dev/null
done

: >"$WORK/results"
echo "load: $CONNS connections, $THREADS wrk threads, ${DURATION}s per run, $REPS interleaved repetitions"
for r in $(seq 1 "$REPS"); do
  echo "repetition $r"
  run direct "$UP_PORT" "$CONNS"
  run nginx "$NGINX_PORT" "$CONNS"
  run stepgate "$SMALL_PORT" "$CONNS"
  run stepgate-scale "$SCALE_PORT" "$CONNS"
done
SG_PEAK32=$(rss $SG_PID VmHWM)

echo "memory: $BIG_CONNS connections against stepgate"
: >"$WORK/rss-big"
( while kill -0 $SG_PID 2>/dev/null; do rss $SG_PID VmRSS >>"$WORK/rss-big"; sleep 0.2; done ) &
SAMPLER=$!; PIDS+=($SAMPLER)
run stepgate-1000c "$SMALL_PORT" "$BIG_CONNS"
kill $SAMPLER 2>/dev/null || true
SG_BIG=$(sort -n "$WORK/rss-big" | tail -n1)
SG_PEAK=$(rss $SG_PID VmHWM)
sleep 2
SG_AFTER=$(rss $SG_PID VmRSS)

# Median over the repetitions per target.
awk -v reps="$REPS" '
  function median(arr, n,   i, j, t) {
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (arr[j] < arr[i]) { t = arr[i]; arr[i] = arr[j]; arr[j] = t }
    return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
  }
  { k = $1; c[k]++; R[k, c[k]] = $2; A[k, c[k]] = $3; B[k, c[k]] = $4; C[k, c[k]] = $5 }
  END {
    split("direct nginx stepgate stepgate-scale stepgate-1000c", names, " ")
    for (x = 1; x <= 5; x++) {
      k = names[x]; n = c[k]; if (!n) continue
      for (i = 1; i <= n; i++) { r[i] = R[k, i]; a[i] = A[k, i]; b[i] = B[k, i]; u[i] = C[k, i] }
      rps[k] = median(r, n); p50[k] = median(a, n); p99[k] = median(b, n); cpu[k] = median(u, n)
    }
    printf "\n| target | requests/s | p50 | p99 | CPU per request |\n|---|---|---|---|---|\n"
    for (x = 1; x <= 5; x++) { k = names[x]; if (k in rps) printf "| %s | %d | %d us | %d us | %s us |\n", k, rps[k], p50[k], p99[k], (k == "direct" ? "-" : cpu[k]) }
    printf "\nthroughput stepgate/nginx:  %.2f x (target >= 0.6)\n", rps["stepgate"] / rps["nginx"]
    printf "throughput stepgate/direct: %.2f x\n", rps["stepgate"] / rps["direct"]
    printf "latency stepgate/direct: p50 %.2f x, p99 %.2f x\n", p50["stepgate"] / p50["direct"], p99["stepgate"] / p99["direct"]
    printf "added over direct at saturation (queueing; the paced targets are held in ../shared/bench): p50 %+d us, p99 %+d us\n", p50["stepgate"] - p50["direct"], p99["stepgate"] - p99["direct"]
    printf "added by nginx:    p50 %+d us, p99 %+d us\n", p50["nginx"] - p50["direct"], p99["nginx"] - p99["direct"]
    printf "scale (1,000 steps, 10,000 policies) / small (4 steps, 10 policies) throughput: %.2f x (target >= 0.9)\n", rps["stepgate-scale"] / rps["stepgate"]
  }' "$WORK/results"
printf "stepgate RSS: idle after start-up %s MiB (target <= 30), peak after %s-connection runs %s MiB,\n" \
  "$(mib "$SG_IDLE")" "$CONNS" "$(mib "$SG_PEAK32")"
printf "  under %s connections %s MiB (peak %s MiB, target <= 100), idle again %s MiB\n" \
  "$BIG_CONNS" "$(mib "$SG_BIG")" "$(mib "$SG_PEAK")" "$(mib "$SG_AFTER")"
printf "stepgate at scale RSS: idle after start-up %s MiB, peak %s MiB\n" \
  "$(mib "$SC_IDLE")" "$(mib "$(rss $SC_PID VmHWM)")"
echo "audit records written (live and rotated files): $(cat "$WORK"/small/audit/stepgate-audit.jsonl* | wc -l) (small), $(cat "$WORK"/scale/audit/stepgate-audit.jsonl* | wc -l) (scale)"
"$STEPGATE" audit verify "$WORK/small/audit/stepgate-audit.jsonl"
echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(date -u +%Y-%m-%dT%H:%MZ)"
