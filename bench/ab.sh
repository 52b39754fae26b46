#!/usr/bin/env bash
# Compares two builds of the job, alternately (each first in every other
# pair), on the same freshly seeded keyspace (the benchmark's 1M-key mix),
# each at full speed: wall time, Redis main-thread CPU and script calls per
# run, then the medians. A change that should not alter the pass (a
# refactor) shows up here as equal medians; the instruction counts of
# bench/callgrind.sh are the finer measure.
#
#   bench/ab.sh OLD_BINARY NEW_BINARY [PAIRS]     # PAIRS: 10 by default
#
# A binary without --max-server-share (before the cap) runs as it is; one
# with it runs at --max-server-share 1. Starts its own redis-server on a free
# loopback port; never the one on 6379.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
old=$1 new=$2 pairs=${3:-10}
# shellcheck source=bench/mix.sh
. "$(dirname "$0")/mix.sh"
start_server

seed() { r flushall >/dev/null && seed_mix 100000 -p "$port"; }
full_speed() { if "$1" run --help 2>/dev/null | grep -q -- --max-server-share; then echo --max-server-share 1; fi; }

results="$dir/results"
for i in $(seq 1 "$pairs"); do
  # The second run of a pair tends to be slower (3% in wall time and Redis
  # CPU, one build against itself in the declared-keys mode): each build
  # goes first in every other pair, so that this cancels out.
  order="old new"; [ $((i % 2)) = 0 ] && order="new old"
  for label in $order; do
    bin=$old; [ "$label" = new ] && bin=$new
    seed
    c0=$(cpu); t0=$(date +%s.%N)
    # shellcheck disable=SC2046 # the flag and its value are two words
    report=$("$bin" run --url "redis://127.0.0.1:$port" --output json $(full_speed "$bin") 2>/dev/null)
    t1=$(date +%s.%N); c1=$(cpu)
    calls=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["batches"])' <<<"$report")
    echo "pair $i: $label, $calls calls" >&2
    echo "$label $t0 $t1 $c0 $c1 $calls" >>"$results"
  done
done
python3 - "$results" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    label, t0, t1, c0, c1, calls = line.split()
    wall, cpu = float(t1) - float(t0), float(c1) - float(c0)
    runs.setdefault(label, []).append((wall, cpu, int(calls)))
print("| build | runs | median wall s | median Redis CPU s | median calls |")
print("|---|---:|---:|---:|---:|")
for label in ("old", "new"):
    r = runs[label]
    med = lambda i: statistics.median(x[i] for x in r)
    print(f"| {label} | {len(r)} | {med(0):.3f} | {med(1):.3f} | {med(2):.0f} |")
old, new = runs["old"], runs["new"]
ratio = lambda i: statistics.median(n[i] / o[i] for o, n in zip(old, new))
print(f"\nnew / old, median of the pairs: wall {ratio(0):.3f}, Redis CPU {ratio(1):.3f}")
PY
