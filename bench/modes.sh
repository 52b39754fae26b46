#!/usr/bin/env bash
# Splits the Redis main-thread CPU of a pass in each key mode of one build:
# the default mode (SCAN inside the script) and the declared-keys mode (the
# job's own SCAN, the keys sent back in the calls' KEYS), run alternately on
# the same freshly seeded keyspace (the benchmark's 1M-key mix), each at full
# speed. From `INFO commandstats`: the time in SCAN (nested in the script
# calls in the default mode), in the script calls besides SCAN, and outside
# any command (reading and parsing requests, writing replies to sockets, the
# event loop), then the medians and the declared mode's extra per part.
#
#   bench/modes.sh BINARY [PAIRS]     # PAIRS: 8 by default
#
# Starts its own redis-server on a free loopback port; never the one on 6379.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
bin=$1 pairs=${2:-8}
# shellcheck source=bench/mix.sh
. "$(dirname "$0")/mix.sh"
start_server

# "EVALSHA-calls EVALSHA-usec SCAN-calls SCAN-usec" since the last CONFIG RESETSTAT.
stats() {
  r info commandstats | tr -d '\r' | awk -F'[:=,]' '
    /^cmdstat_evalsha:/ { ec = $3; eu = $5 }
    /^cmdstat_scan:/ { sc = $3; su = $5 }
    END { printf "%d %d %d %d", ec, eu, sc, su }'
}

results="$dir/results"
for i in $(seq 1 "$pairs"); do
  # Each mode goes first in every other pair (see bench/ab.sh).
  order="server declared"; [ $((i % 2)) = 0 ] && order="declared server"
  for mode in $order; do
    r flushall >/dev/null && seed_mix 100000 -p "$port"
    r config resetstat >/dev/null
    c0=$(cpu)
    JANITOR_KEY_MODE=$mode "$bin" run --url "redis://127.0.0.1:$port" --output json \
      --max-server-share 1 >/dev/null 2>"$dir/job.log" || { cat "$dir/job.log" >&2; exit 1; }
    c1=$(cpu)
    echo "pair $i: $mode" >&2
    echo "$mode $c0 $c1 $(stats)" >>"$results"
  done
done
python3 - "$results" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    mode, c0, c1, evals, eval_us, scans, scan_us = line.split()
    cpu, evals_s, scan_s = float(c1) - float(c0), int(eval_us) / 1e6, int(scan_us) / 1e6
    # The default mode's SCANs run inside its script calls, and count in both.
    script = evals_s - scan_s if mode == "server" else evals_s
    runs.setdefault(mode, []).append(
        {"cpu": cpu, "scan": scan_s, "script": script, "outside": cpu - script - scan_s,
         "calls": int(evals), "scans": int(scans)})
parts = ("cpu", "scan", "script", "outside")
print("| mode | runs | Redis CPU s | SCAN s | script calls besides SCAN s | outside commands s | script calls | SCANs |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for mode in ("server", "declared"):
    med = lambda k: statistics.median(run[k] for run in runs[mode])
    print(f"| {mode} | {len(runs[mode])} | " + " | ".join(f"{med(k):.3f}" for k in parts)
          + f" | {med('calls'):.0f} | {med('scans'):.0f} |")
pairs = list(zip(runs["server"], runs["declared"]))
extra = lambda k: statistics.median(d[k] - s[k] for s, d in pairs)
print("\ndeclared - server, median of the pairs: "
      + ", ".join(f"{k} {extra(k):+.3f} s" for k in parts)
      + f"; Redis CPU declared / server {statistics.median(d['cpu'] / s['cpu'] for s, d in pairs):.3f}")
PY
