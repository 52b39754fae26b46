# shellcheck shell=bash
# Sourced by the shell tools of bench/: the benchmark's keyspace mix, seeded
# with DEBUG POPULATE (the Rust benchmark seeds the same mix itself, in
# bench/src/keyspace.rs), a free loopback port, and a server of their own.

# A loopback port that was free a moment ago.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# seed_mix TENTHS REDIS-CLI-ARGS...: seeds TENTHS x 10% of the mix's keys
# each of: 40% keep:* (no rule), 20% temp:*, 20% cache:nottl:*, 10%
# cache:short:* (30 s TTL), 10% cache:long:* (2 h TTL). TENTHS=10000 seeds
# 100k keys, 100000 seeds 1M.
seed_mix() {
  local n=$1; shift
  local r=(redis-cli "$@")
  "${r[@]}" debug populate $((4 * n)) keep 5 >/dev/null
  "${r[@]}" debug populate $((2 * n)) temp 5 >/dev/null
  "${r[@]}" debug populate $((2 * n)) cache:nottl 5 >/dev/null
  "${r[@]}" debug populate "$n" cache:short 5 >/dev/null
  "${r[@]}" debug populate "$n" cache:long 5 >/dev/null
  "${r[@]}" eval "for i=0,$((n - 1)) do redis.call('PEXPIRE','cache:short:'..i,30000); redis.call('PEXPIRE','cache:long:'..i,7200000) end" 0 >/dev/null
}

# start_server: a redis-server of its own on a free loopback port ($port),
# in a temp dir ($dir), shut down and removed when the script exits; r
# runs redis-cli against it. Never the Redis on 6379.
start_server() {
  dir=$(mktemp -d)
  port=$(free_port)
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
    --enable-debug-command yes --logfile "$dir/redis.log" --daemonize yes --pidfile "$dir/redis.pid"
  trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
  until r ping >/dev/null 2>&1; do sleep 0.1; done
}
r() { redis-cli -p "$port" "$@"; }

# The server's main-thread CPU seconds so far (user + system).
cpu() { r info cpu | awk -F: '/used_cpu_(sys|user)_main_thread/ { s += $2 } END { printf "%.3f", s }'; }
