#!/usr/bin/env bash
# Counts the instructions redis-server executes for one cleanup of a 100k-key
# keyspace (the benchmark's mix), under callgrind: repeatable on a noisy
# machine, unlike seconds. It compares the job's server-side work with the
# server-side bound's (one EVAL looping SCAN, from bench/src/methods.rs).
#
#   bench/callgrind.sh            # the bound, then the job with the built-in rules
#   bench/callgrind.sh -- ARGS    # extra arguments for `redis-janitor run`
#
# Under valgrind Redis runs ~50x slower, so the job gets --max-call-time 50ms
# to make calls of the size it makes at full speed with its 1ms default.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/mix.sh
. bench/mix.sh
[ "${1:-}" = "--" ] && shift
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
cargo build --release --locked --quiet
job=target/release/redis-janitor
bound_lua=$(sed -n '/^const BOUND_LUA/,/^"#;/p' bench/src/methods.rs | sed '1d;$d')

count() { # label, then "bound" or the job's extra arguments
  local label=$1; shift
  local dir port pid
  dir=$(mktemp -d)
  port=$(free_port)
  valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" redis-server --port "$port" \
    --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --enable-debug-command yes >"$dir/vg.log" 2>&1 &
  pid=$!
  until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.2; done
  local r=(redis-cli -p "$port")
  seed_mix 10000 -p "$port"
  callgrind_control -z "$pid" >/dev/null 2>&1
  if [ "${1:-}" = bound ]; then
    "${r[@]}" eval "$bound_lua" 0 3600000 60000 1000 >/dev/null
  else
    "$job" run --url "redis://127.0.0.1:$port" --timeout 120s --max-call-time 50ms "$@" >/dev/null 2>&1
  fi
  callgrind_control -d "$pid" >/dev/null 2>&1
  local left
  left=$("${r[@]}" dbsize)
  "${r[@]}" shutdown nosave >/dev/null 2>&1 || true
  wait "$pid" || true
  printf '%-8s %8.1f M instructions  (%s keys left, 70000 expected)\n' "$label" \
    "$(awk '/^(summary|totals):/ {print $2 / 1e6; exit}' "$dir/cg.out.1")" "$left"
  rm -rf "$dir"
}

count bound bound
count janitor "$@"
