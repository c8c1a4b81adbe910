#!/usr/bin/env bash
# Interleaved A/B of two (or more) stepgate binaries in the shared harness's setting, for telling
# a change from this VM's drift (absolute figures move ~30% from hour to hour; an interleaved
# pair does not):
#
#   benches/ab.sh OLD_BINARY NEW_BINARY [MORE...]     # ROUNDS=3 SAT=6 LAT=5 by default
#
# Needs a writable copy of ../shared/bench that has run once (its upstream built, its tokens
# in .run/jwt): `cp -r ../shared/bench /tmp/stepgate-bench && (cd /tmp/stepgate-bench &&
# ROUNDS=1 DURATION=2 LAT_DURATION=1 PEERS=direct ./run.sh)`; BENCH_DIR points at it.
# Pinned as the harness pins: wrk -t1 -c32 on CPU 0, the harness's upstream and stepgate on
# CPU 1; stepgate runs the harness's stepgate.toml (everything on: RS256 JWT, Cedar, durable
# audit, SigV4) on ports of its own, with a fresh audit folder on the real disk per run. Each
# round measures the upstream directly (paced), then each binary (order reversed every other
# round): a 2 s warm-up, a SAT-second saturation run (req/s, CPU per request from
# /proc/PID/stat, that CPU over the co-located upstream's in the same seconds -- the upstream is
# the same program for every binary, so the ratio holds still while the host's speed drifts --
# involuntary context switches per request of the runtime thread, the audit writer thread's CPU
# per request -- its `fdatasync`s, a share of the total -- and the records per group commit, from
# /metrics) and a LAT-second paced run (32 connections, 15 ms think time; added p50 / p90 / p99
# over direct, and the writer thread's CPU per group commit in it: what a change to the commit
# path moves, steadier than the end-to-end figures).
# Prints one line per binary and round. Everything it starts is stopped.
set -euo pipefail

(($# >= 2)) || { sed -n '2,/^# Prints one line/p' "$0"; exit 2; }
BENCH_DIR=${BENCH_DIR:-/tmp/stepgate-bench}
ROUNDS=${ROUNDS:-3}
SAT=${SAT:-6}
LAT=${LAT:-5}
UP_PORT=${UP_PORT:-18180}
SG_PORT=${SG_PORT:-18190}
. "$(dirname "$0")/kit.sh"
harness_copy_ready "$BENCH_DIR"
absolute_binaries "$@"
set -- "${BINS[@]}"

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/stepgate-ab.XXXXXX")
PIDS=()
trap 'stop_started; rm -rf "$WORK"' EXIT
harness_workspace "$BENCH_DIR" "$WORK" "$SG_PORT" "$UP_PORT"

start_harness_upstream "$BENCH_DIR" "$UP_PORT" "$WORK/upstream.log"

field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# CPU ticks of the audit writer thread (named stepgate-audit) of process $1.
writer_ticks() {
  local t
  for t in /proc/"$1"/task/*; do
    if [[ $(cat "$t/comm" 2>/dev/null) == stepgate-audit ]]; then awk '{print $14 + $15}' "$t/stat"; return; fi
  done
  echo 0
}
# Group commits so far and the records they held: "COUNT SUM".
commits() {
  curl -sf "http://127.0.0.1:$SG_PORT/metrics" |
    awk '/^stepgate_audit_batch_records_count/{c=$2} /^stepgate_audit_batch_records_sum/{s=$2} END{print c+0, s+0}'
}
# Involuntary context switches of the main thread (the runtime's, on one CPU).
switches() { awk '/^nonvoluntary_ctxt_switches/{print $2}' "/proc/$1/task/$1/status"; }
load() {  # load URL SECONDS THINK_MS -> the BENCHJSON line
  BENCH_TOKEN_FILE=$TOKEN BENCH_DELAY_MS=$3 timeout $(($2 + 30)) taskset -c 0 \
    wrk -t1 -c32 -d"$2s" --timeout 5s -s "$BENCH_DIR/post.lua" "$1" 2>&1 | sed -n 's/^BENCHJSON //p'
}

for r in $(seq 1 "$ROUNDS"); do
  d=$(load "http://127.0.0.1:$UP_PORT/aws/states" "$LAT" 15)
  order=("$@")
  if ((r % 2 == 0)); then mapfile -t order < <(printf '%s\n' "$@" | tac); fi
  for b in "${order[@]}"; do
    rm -rf "$WORK/audit"
    (cd "$WORK" && exec taskset -c 1 "$b" serve --config stepgate.toml >"$WORK/stepgate.log" 2>&1) &
    p=$!
    PIDS+=("$p")
    wait_ready "$SG_PORT" "$WORK/stepgate.log"
    load "http://127.0.0.1:$SG_PORT/aws/states" 2 0 >/dev/null
    t0=$(ticks "$p"); c0=$(switches "$p"); u0=$(ticks "$UPSTREAM_PID"); w0=$(writer_ticks "$p"); read -r b0 r0 < <(commits)
    s=$(load "http://127.0.0.1:$SG_PORT/aws/states" "$SAT" 0)
    t1=$(ticks "$p"); c1=$(switches "$p"); u1=$(ticks "$UPSTREAM_PID"); w1=$(writer_ticks "$p"); read -r b1 r1 < <(commits)
    w2=$(writer_ticks "$p"); read -r b2 _ < <(commits)
    l=$(load "http://127.0.0.1:$SG_PORT/aws/states" "$LAT" 15)
    w3=$(writer_ticks "$p"); read -r b3 _ < <(commits)
    kill "$p"; wait "$p" 2>/dev/null || true
    printf 'round %d  %-36s %8.0f req/s  %5.1f µs/req (writer %4.1f)  %4.2f x upstream  %5.1f records/commit  %4.2f inv. switches/req  non-2xx %s | paced +p50 %4d  +p90 %4d  +p99 %5d µs (direct p50 %d µs), writer %3.0f µs/commit\n' \
      "$r" "$(basename "$b")" "$(field "$s" rps)" \
      "$(python3 -c "print(($t1 - $t0) * 1e6 / $(getconf CLK_TCK) / $(field "$s" requests))")" \
      "$(python3 -c "print(($w1 - $w0) * 1e6 / $(getconf CLK_TCK) / $(field "$s" requests))")" \
      "$(python3 -c "print(($t1 - $t0) / max($u1 - $u0, 1))")" \
      "$(python3 -c "print(($r1 - $r0) / max($b1 - $b0, 1))")" \
      "$(python3 -c "print(($c1 - $c0) / $(field "$s" requests))")" \
      "$(field "$s" non2xx)" \
      $(($(field "$l" p50_us) - $(field "$d" p50_us))) $(($(field "$l" p90_us) - $(field "$d" p90_us))) \
      $(($(field "$l" p99_us) - $(field "$d" p99_us))) "$(field "$d" p50_us)" \
      "$(python3 -c "print(($w3 - $w2) * 1e6 / $(getconf CLK_TCK) / max($b3 - $b2, 1))")"
  done
done
