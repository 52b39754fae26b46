# Sourced by the shell tools of bench/: the benchmark's keyspace mix, seeded
# with DEBUG POPULATE (the Rust benchmark seeds the same mix itself, in
# bench/src/keyspace.rs), and a free loopback port.

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
