-- redis-janitor clean script, version v11.
--
-- Cleans one stretch of the keyspace: runs SCAN steps from a cursor until a
-- time budget is spent, matches each key's name against the rules' patterns,
-- re-checks the key against the conditions of the rules it matched, in rule
-- order, and applies the first rule whose conditions all hold. The keys never
-- cross the network, and Redis runs the script atomically and freezes time
-- while it runs, so a key cannot change or expire between the check and the
-- action.
--
-- A writing call also holds the run's lease on the node and records the
-- pass's checkpoint, in the same atomic call as its work: the work and the
-- cursor it reached commit together, and a run that lost its lease (it was
-- paused past it, and another run took over) can never act.
--
-- This file is a template: the binary builds the script for one set of rules
-- (src/script/compile.rs). It prepends a header, an optional `#!lua
-- flags=...` shebang (Redis 7+) and `local DRY_RUN, CLUSTER, DECLARED =
-- ...` (the variant), and
-- replaces the three marker lines, `compiled: setup`, `compiled: keys` and
-- `compiled: decide`, with code. `keys` is where a step gets its keys, and
-- makes the two variants of the one source:
--   scanned   a SCAN step inside the script, from the cursor: the keys it
--             touches are not declared (the default mode);
--   declared  the keys the call declares in KEYS, which the job got from
--             its own SCAN: one step, whose cursor is '0', and every key
--             the script touches is declared (for servers and proxies that
--             refuse undeclared keys). Such a call cannot read the lease or
--             save the checkpoint: on a cluster those keys are in other
--             slots; the job sends the `save` operation after the call
--             instead. It carries the run's deadline in place of the lease's
--             token: the server time from which the lease, as the run last
--             renewed it, may have expired, when the call refuses to act.
-- The other two markers become the protocol's constants (VANISHED, UNCHANGED, CAPPED, MOVED, BLIND,
-- MIN_STEP and the reserved prefix, defined in src/script/protocol.rs), the
-- rules' number, the SCAN MATCH pattern, whether a rule could select a key
-- under the reserved prefix, and the tables of the globs matched in Lua
-- (`setup`), and the per-key decision, one `if` per pattern and one per rule
-- (`decide`). With DRY_RUN the script decides exactly as it would otherwise,
-- but writes nothing, and holds no lease.
--
-- With CLUSTER (a Redis Cluster node) every command names one key: a
-- command over keys of several slots fails there even when the script may
-- touch keys of many (`allow-cross-slot-keys`). A key of a slot that is
-- moving away or being imported is refused by Redis; the script asks for its
-- first check or its unconditional delete with redis.pcall, counts such a
-- key as MOVED, leaves it for the next run and goes on. A key its check
-- reached is served here, so the key's other commands in the call cannot be
-- refused.
--
-- Keys under the reserved prefix are the job's own (the lease, the
-- checkpoint, the history); the script never lets a rule select them.
--
-- KEYS     a declared `clean` call: the keys to clean (all of one slot on a
--          cluster). Any other call, a writing one: 1. the lease, a hash
--          (token, holder, since); 2.
--          the checkpoint, a hash (see `save`); 3. the history, a hash whose
--          field `last_success` is when a run last cleaned the node
--          successfully (server time, ms), expiring after 30 days without
--          one. All carry one hash tag on a cluster node, of a slot the node
--          serves. A dry run: none.
-- ARGV[1]  the operation: 'acquire', 'renew', 'release', 'save' or 'clean'.
-- ARGV[2]  the run's lease token ('' for none: --no-lock, a dry run).
-- ARGV[3]  the lease's time to live, in milliseconds; in a declared `clean`
--          call, which cannot read the lease, the run's deadline instead:
--          the server time (ms) from which the lease, as the run last renewed
--          it, may have expired ('-1': none, --no-lock).
--
-- acquire  ARGV[4] the holder, as the lease names it. Takes the lease when it
--          is free or already this run's, and answers
--          {status, holder, since, lease ms left, the server's time in ms,
--          the checkpoint as HGETALL gives it}, status 'acquired', 'locked'
--          (another run holds it: holder and since are that run's) or
--          'refused' (the server refused the write; holder is its error).
-- renew    Renews the lease: the server's time in ms, read before the
--          lease's expiry was set, or the error LEASELOST.
-- release  ARGV[4] '1' when the run's work on the node succeeded: records
--          `last_success` in the history, unless the lease is another run's.
--          Deletes the lease if it is this run's: 1, else 0.
-- save     ARGV[4] the cursor the next call starts from, ARGV[5] '1' when
--          the pass is done, ARGV[6] and ARGV[7] the keys the job's SCAN
--          returned and the keys acted on since the last save, ARGV[8..11]
--          the pass, as ARGV[10..13] of clean. Saves the checkpoint like a
--          clean call does, if the lease is still the run's, renewing it:
--          {'saved' (or the error that refused the write), the server's
--          time in ms, read before the lease's expiry was set}, else the
--          error LEASELOST. A run reckons the deadline of its declared
--          calls from that time (see ARGV[3]).
-- clean    ARGV[4] the cursor to SCAN from.
--          ARGV[5] the COUNT of each SCAN step.
--          ARGV[6] the scan budget in microseconds: each SCAN step after the
--          first looks at as many keys as the rest of the budget has room
--          for, at the pace of the step before, up to ARGV[5] (by the
--          script's stopwatch; where it stands still, a call makes one step).
--          ARGV[7] the most keys the call may look at: its steps' COUNTs.
--          ARGV[8] '1' to return every matched key with its outcome.
--          ARGV[9] '1' to save the checkpoint, else ''.
--          ARGV[10] the rules' fingerprint, ARGV[11] the server's run_id,
--          ARGV[12] when the pass began (ms, server time), ARGV[13] the
--          checkpoint's time to live (ms): the pass the checkpoint records.
--          ARGV[14] '1' to estimate the bytes the deletes give back, from
--          MEMORY USAGE of each key before it is deleted (or, in a dry run,
--          would be).
--          ARGV[15] the most keys the call may act on, over all rules, and
--          ARGV[16 + r - 1] the most rule r may act on ('-1': no cap).
--          Refuses with the error LEASELOST, before touching anything, when
--          the call is to hold a lease that is not (or no longer) its run's,
--          or, a declared call, once the server's clock reached its deadline;
--          with the error NOPERM, before it writes any key, when the user may
--          not write every key it is to write (see `writable`) or, on a
--          cluster node, read every key it checks (see `unless_denied`).
--
-- Reply    of clean, an array:
--          1. the next cursor ('0' at the end of the keyspace);
--          2. the keys looked at (the steps' COUNTs);
--          3. the keys SCAN returned;
--          4. the keys whose name matched a rule's pattern;
--          5. of those, the keys no rule's conditions took;
--          6. of those, the keys gone before their rule acted on them (a key
--             that SCAN returned twice);
--          7. of those, the keys this cluster node refused (moving slots);
--          8. per rule, the keys it acted on (or, in a dry run, would have);
--          9. the microseconds the scan (SCAN and checks) took, and
--          10. the microseconds from the scan's start to the end, by the
--             script's stopwatch (0 where it stands still: see there);
--          11. with ARGV[8] = '1' the matched keys, else an empty array;
--          12. a string with one byte per key of 11.: 0 the key had
--              vanished; 1 no rule's conditions held (key left as it was);
--              1 + r rule r acted on it (or, in a dry run, would have);
--              126 rule's cap reached (key left as it was); 127 the node
--              refused the key (moved); 128 + r rule r, a delete without
--              conditions, deleted it if it still existed (and, on a
--              cluster node, was served here);
--          13. per rule, the keys it would have acted on beyond its cap or
--              the call's (left as they were);
--          14. the checkpoint: 'saved', '' (none asked for), or the error
--              that refused its write;
--          15. with ARGV[8] = '1', per key of 11. the PTTL its check saw
--              (-3: not checked, a delete without conditions);
--          16. with ARGV[14] = '1', the bytes the deleted keys held, by
--              MEMORY USAGE, else 0.
--
-- Keys whose first matching rule is a delete without conditions need no
-- check: they are deleted in one UNLINK per rule (per key with CLUSTER),
-- whose reply tells how many still existed. Every other key is checked first (PTTL, and TYPE or OBJECT
-- IDLETIME when a rule needs them). All checks run before the first write, so
-- an error (for example OBJECT IDLETIME under an LFU eviction policy) aborts
-- the call with nothing applied. The writes' arguments are the keys and each
-- expire rule's TTL, a constant the binary checked when it read the rules
-- (whole milliseconds, at most 100 years: PEXPIRE accepts it at any server
-- time), and the binary checks before the pass that the user may run every
-- command the script calls, and the call that the user may write every key
-- it is about to write (see `writable`), so the write phase cannot fail
-- halfway.
--
-- Redis 6.2 refuses a script's first write at maxmemory when that command
-- may add memory (HSET), but no write after one that the script made. So
-- the lease and the checkpoint are each touched with PEXPIRE, which never
-- adds memory, before they are written: a cleanup is needed most at
-- maxmemory. A write refused anyway is caught and answered, never half-done.

-- Locals for what the per-key loops call: a global lookup costs a hash probe.
local call, try, find, byte, sub, tonumber, floor, min, max =
  redis.call, redis.pcall, string.find, string.byte, string.sub, tonumber, math.floor, math.min, math.max
-- Whether the user may run a command on given keys (Redis 7 and later).
local acl_check = redis.acl_check_cmd
-- Bytes per string.char call: below Lua's limit on the number of arguments
-- to one function call.
local CHUNK = 4000
-- Keys per UNLINK/EXISTS call: as many as a call takes, or one on a cluster
-- node, where one command's keys must share a slot.
local KEYS_PER_CALL = CLUSTER and 1 or CHUNK

-- The protocol's outcome bytes (see the reply, 12.), the fewest keys a
-- SCAN step looks at (a smaller one costs more than it does) and the
-- reserved prefix; the rules: how many, the SCAN MATCH pattern (nil for
-- none), whether one may select a key under the reserved prefix (GUARD),
-- and the globs that `matches` checks, as tables (see there).
-- compiled: setup

-- Whether `key` matches the glob that `m` describes: `head` and `tail` are
-- anchored Lua patterns of `head_len` and `tail_len` key bytes, `star`
-- whether the glob has a '*', `middles` the Lua patterns between two '*'s. A
-- glob is its fixed-width parts split at the '*'s: the head must start the
-- key, the tail end it, and the middles follow in order in between, each at
-- its leftmost place (any later place leaves less room for the rest). Only
-- the pattern '*' matches the empty key (SCAN answers it without matching),
-- and that one needs no Lua matcher at all.
local function matches(key, m)
  local len = #key
  if len == 0 or len < m.head_len + m.tail_len then
    return false
  end
  if not m.star then
    return len == m.head_len and find(key, m.head) ~= nil
  end
  if m.head_len > 0 and not find(key, m.head) then
    return false
  end
  local last = len - m.tail_len
  if m.tail_len > 0 and not find(key, m.tail, last + 1) then
    return false
  end
  local from = m.head_len + 1
  local middles = m.middles
  for i = 1, #middles do
    local _, stop = find(key, middles[i], from)
    if not stop or stop > last then
      return false
    end
    from = stop + 1
  end
  return true
end

-- Runs `command` on `keys` in chunks and sums the integer replies.
local function each_chunk(command, keys)
  local total = 0
  for first = 1, #keys, KEYS_PER_CALL do
    total = total + call(command, unpack(keys, first, min(first + KEYS_PER_CALL - 1, #keys)))
  end
  return total
end

-- A cluster node refused `command` on `key`: its slot is served elsewhere
-- (the caller counts it moved), unless the ACL refused it. Redis 7 and
-- later tell which: the call then ends with NOPERM, before its first write
-- (`writable` checked the writes' keys).
local function unless_denied(command, key)
  if acl_check and not acl_check(command, key) then
    error(redis.error_reply('NOPERM the user may not read every key the rules select ' ..
      '(its ACL key patterns are narrower than the rules\' patterns): the call changed none of them'))
  end
end

-- Runs `command` on each of `keys` that the node serves (CLUSTER): sums the
-- integer replies, and counts the keys the node refused.
local function each_served(command, keys)
  local total, refused = 0, 0
  for i = 1, #keys do
    local reply = try(command, keys[i])
    if type(reply) == 'table' then
      unless_denied(command, keys[i])
      refused = refused + 1
    else
      total = total + reply
    end
  end
  return total, refused
end

-- The unique keys of `keys`: a key listed twice counts once, as for UNLINK.
local function unique(keys)
  local seen, out = {}, {}
  for i = 1, #keys do
    if not seen[keys[i]] then
      seen[keys[i]] = true
      out[#out + 1] = keys[i]
    end
  end
  return out
end

-- How many of one rule's unconditional deletes' `keys` existed (and were
-- deleted unless `dry_run`), and how many the node refused.
local function blind_delete(keys, dry_run)
  local command = dry_run and 'EXISTS' or 'UNLINK'
  if dry_run then
    keys = unique(keys)
  end
  if CLUSTER then
    return each_served(command, keys)
  end
  return each_chunk(command, keys), 0
end

-- A cap from the arguments: a count, or none ('-1').
local function limit(arg)
  local n = tonumber(arg)
  if n < 0 then
    return math.huge
  end
  return n
end

-- The server's clock, in microseconds. Since Redis 7.2 it stands still
-- within a call: TIME answers when the call began.
local function now_micros()
  local now = call('TIME')
  return tonumber(now[1]) * 1000000 + tonumber(now[2])
end

-- The stopwatch that times the call's own work, in microseconds: os.clock,
-- the server process's CPU time, where scripts have it (Redis 7.4 and
-- later, Valkey 8), since TIME stands still there; the server's clock
-- before Redis 7.2. Redis 7.2 and 7.3 have neither: their stopwatch stands
-- still, and a call then makes one SCAN step (see `scan`).
local os_clock = rawget(_G, 'os') and rawget(_G, 'os').clock
local stopwatch = now_micros
if os_clock then
  stopwatch = function()
    return floor(os_clock() * 1000000)
  end
end

-- Phase 1: SCAN steps and the decision for every key they return, writing
-- nothing. Returns what to write and what to report. One function with
-- locals: its inner loop runs per key, where every table lookup counts.
local function scan(report_keys)
  local started = stopwatch()
  local cursor, count, budget, max_keys = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
  local step = { cursor, 'COUNT', count }
  if SCAN_MATCH then
    step = { cursor, 'MATCH', SCAN_MATCH, 'COUNT', count }
  end
  local count_at, next_count = #step, min(count, max_keys)
  -- Per rule: the keys acted on, its cap (the most it may act on in this
  -- call), the keys it would have acted on beyond, and its unconditional
  -- deletes. `nacted` counts every rule's, against `cap_all`, and `ncapped`
  -- the keys left for a cap.
  local acted, cap, capped, blind, nblind = {}, {}, {}, {}, {}
  local cap_all = limit(ARGV[15])
  for r = 1, RULES do
    acted[r], cap[r], capped[r], blind[r], nblind[r] = 0, limit(ARGV[15 + r]), 0, {}, 0
  end
  local deletes, expires, ttls, reported, outcomes, pttls = {}, {}, {}, {}, {}, {}
  local ndeletes, nexpires, looked_at, returned, matched, unchanged, vanished, moved = 0, 0, 0, 0, 0, 0, 0, 0
  local nacted, ncapped = 0, 0
  local now = started
  -- The cursor a capped step started from: the call ends after that step,
  -- and the next call (of the next run) starts there again, so the keys the
  -- cap left are not skipped. Its keys acted on are checked again then, as
  -- when SCAN returns a key twice.
  local rewind = nil
  repeat
    local from = cursor
    -- compiled: keys
    returned = returned + #keys
    for i = 1, #keys do
      local key = keys[i]
      -- The rules in order: a key whose name matches a pattern is
      -- UNCHANGED until one of the pattern's rules acts on it (and `break`s
      -- out with its outcome), or PTTL finds it gone (VANISHED) or, on a
      -- cluster node, refused (MOVED), or the rule's cap leaves it as it is
      -- (CAPPED). A key under the reserved prefix breaks out first, when a
      -- rule could select it.
      local outcome, pttl = nil, nil
      repeat
        -- compiled: decide
      until true
      if outcome then
        matched = matched + 1
        if outcome == UNCHANGED then
          unchanged = unchanged + 1
        end
        if report_keys then
          reported[matched], outcomes[matched] = key, outcome
          pttls[matched] = type(pttl) == 'number' and pttl or -3
        end
      end
    end
    -- The next step looks at as many keys as the rest of the budget has
    -- room for at this step's pace, so the call fills its budget. A
    -- stopwatch that stood still over a whole step cannot time the next:
    -- the call ends, and the job sizes its one step from the calls' round
    -- trips instead.
    local before = now
    now = stopwatch()
    local room = 0
    if now > before then
      room = floor(next_count * (budget - (now - started)) / (now - before))
    end
    next_count = min(count, max_keys - looked_at, room)
    if ncapped > 0 then
      rewind = from
    end
  until cursor == '0' or next_count < MIN_STEP or rewind
  return {
    rewound = rewind ~= nil, cursor = rewind or cursor,
    started = started, micros = now - started, looked_at = looked_at, returned = returned,
    matched = matched, unchanged = unchanged, vanished = vanished, moved = moved, acted = acted,
    capped = capped, blind = blind, deletes = deletes, expires = expires, ttls = ttls, keys = reported,
    outcomes = outcomes, pttls = pttls,
  }
end

-- The bytes `keys` hold, by MEMORY USAGE (its default sampling of nested
-- values): a key listed twice counts once, a key gone or refused counts 0.
local function usage(keys)
  local bytes = 0
  keys = unique(keys)
  for i = 1, #keys do
    local n = try('MEMORY', 'USAGE', keys[i])
    if type(n) == 'number' then
      bytes = bytes + n
    end
  end
  return bytes
end

-- Whether the user may write every key `s` is to write. Redis checks a
-- script's key permissions command by command, so under an ACL whose key
-- patterns are narrower than the rules' a write would be refused after the
-- call's other writes had run: the call checks them all before the first.
-- Redis 7 and later: redis.acl_check_cmd, once for every key at once
-- when it can, else each write as the call will make it: UNLINK over the
-- same keys at a time, PEXPIRE of each key. A declared call too: Redis
-- checked the keys it declares before it began, but as EVALSHA's, which an
-- ACL selector may allow where it refuses the writes.
-- Redis 6.2 has no read-only key permissions and no selectors, so a key its
-- check (PTTL) could read is writable, as is a key a declared call
-- declares, and only the blind deletes' keys of a scanning call are read
-- first, with EXISTS, whose refusal ends the call; on a cluster node each
-- blind delete is a redis.pcall of its own, whose refusal leaves the key
-- alone.
local PROBE = string.rep('\0\255', 8)
local function writable(s)
  if not acl_check then
    if not CLUSTER and not DECLARED then
      for _, keys in ipairs(s.blind) do
        each_chunk('EXISTS', keys)
      end
    end
    return true
  end
  -- Redis's glob matches no pattern but the empty one to the empty key, so
  -- the ACL lets the empty key through only the all-keys flag (`~*`, as in
  -- the lines `redis-janitor acl` prints), which lets every key through,
  -- or the empty pattern (`~`), which lets no other. A user who may write
  -- both the empty key and PROBE, sixteen bytes of 0 and 255 that no key
  -- pattern is written to match, may write every key: the call needs no
  -- check per key.
  local deletes = #s.deletes > 0
  for _, keys in ipairs(s.blind) do
    deletes = deletes or #keys > 0
  end
  local function on_every_key(command, ...)
    return acl_check(command, '', ...) and acl_check(command, PROBE, ...)
  end
  if (not deletes or on_every_key('UNLINK')) and (#s.expires == 0 or on_every_key('PEXPIRE', '1')) then
    return true
  end
  local function all(keys)
    for first = 1, #keys, KEYS_PER_CALL do
      if not acl_check('UNLINK', unpack(keys, first, min(first + KEYS_PER_CALL - 1, #keys))) then
        return false
      end
    end
    return true
  end
  for _, keys in ipairs(s.blind) do
    if not all(keys) then
      return false
    end
  end
  if not all(s.deletes) then
    return false
  end
  local expires, ttls = s.expires, s.ttls
  for i = 1, #expires do
    if not acl_check('PEXPIRE', expires[i], ttls[i]) then
      return false
    end
  end
  return true
end

-- Phase 2: acts on the decided keys (a dry run only counts the blind
-- deletes' keys that still exist). The blind deletes' keys that had vanished
-- or that the node refused move from their rules' counts to the vanished or
-- moved ones. With `measure`, first sums what the keys to delete hold.
local function apply(s, dry_run, measure)
  s.freed = 0
  if measure then
    s.freed = usage(s.deletes)
    for _, keys in ipairs(s.blind) do
      s.freed = s.freed + usage(keys)
    end
  end
  for r, keys in ipairs(s.blind) do
    if #keys > 0 then
      local existed, refused = blind_delete(keys, dry_run)
      s.acted[r] = s.acted[r] - (#keys - existed)
      s.vanished = s.vanished + #keys - existed - refused
      s.moved = s.moved + refused
    end
  end
  if not dry_run then
    each_chunk('UNLINK', s.deletes)
    local expires, ttls = s.expires, s.ttls
    for i = 1, #expires do
      call('PEXPIRE', expires[i], ttls[i])
    end
  end
end

-- The outcome bytes as one string.
local function outcome_string(outcomes)
  local parts = {}
  for first = 1, #outcomes, CHUNK do
    parts[#parts + 1] = string.char(unpack(outcomes, first, min(first + CHUNK - 1, #outcomes)))
  end
  return table.concat(parts)
end

-- The lease: KEYS[1], a hash of the holding run's token, its holder and
-- since when (server time, ms), expiring after ARGV[3] ms unless renewed.
local LEASE, CHECKPOINT, HISTORY, OP, TOKEN, LEASE_TTL = KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3]

-- How long the history outlives the last success: a month.
local HISTORY_TTL = 30 * 24 * 3600 * 1000

-- The server's clock, in milliseconds.
local function now_millis()
  return floor(now_micros() / 1000)
end

-- Whether this call may act: it holds no lease (TOKEN ''), or the lease
-- holds its token, which the call then renews. A missing lease (expired,
-- or lost in a failover) is not held: another run may have taken over.
local function hold()
  if TOKEN == '' then
    return true
  end
  if call('HGET', LEASE, 'token') ~= TOKEN then
    return false
  end
  call('PEXPIRE', LEASE, LEASE_TTL)
  return true
end

-- The error a call that does not hold its lease answers, naming the holder.
local function lost()
  local lease = call('HMGET', LEASE, 'holder', 'since')
  if lease[1] then
    return redis.error_reply('LEASELOST the lease is held by ' .. lease[1] .. ' since ' .. lease[2])
  end
  return redis.error_reply('LEASELOST the lease expired or was lost')
end

-- Takes the lease, if it is free or this run's, and reads the checkpoint.
local function acquire()
  local lease = call('HMGET', LEASE, 'token', 'holder', 'since')
  local now = now_millis()
  if TOKEN ~= '' then
    if lease[1] and lease[1] ~= TOKEN then
      return { 'locked', lease[2], lease[3], call('PTTL', LEASE), now, {} }
    end
    -- PEXPIRE first: see the header (Redis 6.2 at maxmemory).
    call('PEXPIRE', LEASE, LEASE_TTL)
    lease[2], lease[3] = ARGV[4], lease[3] or tostring(now)
    local written = try('HSET', LEASE, 'token', TOKEN, 'holder', lease[2], 'since', lease[3])
    if type(written) == 'table' then
      return { 'refused', written.err, '', 0, now, {} }
    end
    call('PEXPIRE', LEASE, LEASE_TTL)
  end
  return { 'acquired', lease[2] or '', lease[3] or '', tonumber(LEASE_TTL), now, call('HGETALL', CHECKPOINT) }
end

-- The pass a checkpoint records, from ARGV[i] on: the rules' fingerprint,
-- the server's run_id, when the pass began (ms), the checkpoint's time to
-- live (ms).
local function pass_at(i)
  return { fingerprint = ARGV[i], run_id = ARGV[i + 1], started = ARGV[i + 2], ttl = ARGV[i + 3] }
end

-- Records the progress of `pass` after a call's work: `cursor`, where the
-- next call starts, whether the pass is `done`, when it was saved (`now`,
-- ms), and the pass's totals so far, with the call's keys `returned` and
-- `acted` on (reset when the checkpoint held another pass). Answers
-- 'saved', or the error that refused the write.
local function save(pass, cursor, done, returned, acted, now)
  -- PEXPIRE first: see the header (Redis 6.2 at maxmemory). It also sets
  -- the expiry of a checkpoint that exists; a new one gets it after HSET.
  local existed = call('PEXPIRE', CHECKPOINT, pass.ttl) == 1
  local old = call('HMGET', CHECKPOINT, 'started', 'fingerprint', 'run_id', 'calls', 'scanned', 'acted')
  local calls = 1
  if old[1] == pass.started and old[2] == pass.fingerprint and old[3] == pass.run_id then
    calls, returned, acted = calls + tonumber(old[4]), returned + tonumber(old[5]), acted + tonumber(old[6])
  end
  local written = try('HSET', CHECKPOINT, 'cursor', cursor, 'done', done, 'fingerprint', pass.fingerprint,
    'run_id', pass.run_id, 'started', pass.started, 'saved', now, 'calls', calls,
    'scanned', returned, 'acted', acted)
  if type(written) == 'table' then
    return written.err
  end
  if not existed then
    call('PEXPIRE', CHECKPOINT, pass.ttl)
  end
  return 'saved'
end

-- Saves the checkpoint after `s`, a clean call's work. A capped call
-- rewound to cursor 0 has not finished the pass.
local function save_after(s)
  local acted = 0
  for r = 1, RULES do
    acted = acted + s.acted[r]
  end
  local done = (s.cursor == '0' and not s.rewound) and '1' or '0'
  return save(pass_at(10), s.cursor, done, s.returned, acted, now_millis())
end

if OP == 'acquire' then
  return acquire()
elseif OP == 'renew' then
  -- The clock first: the lease lasts at least its time to live from then.
  local now = now_millis()
  if not hold() then
    return lost()
  end
  return now
elseif OP == 'release' then
  local mine = TOKEN ~= '' and call('HGET', LEASE, 'token') == TOKEN
  if ARGV[4] == '1' and (TOKEN == '' or mine) then
    -- PEXPIRE first: see the header (Redis 6.2 at maxmemory). A refused
    -- write loses only this record.
    local existed = call('PEXPIRE', HISTORY, HISTORY_TTL) == 1
    local written = try('HSET', HISTORY, 'last_success', now_millis())
    if not existed and type(written) ~= 'table' then
      call('PEXPIRE', HISTORY, HISTORY_TTL)
    end
  end
  if mine then
    return call('DEL', LEASE)
  end
  return 0
elseif OP == 'save' then
  local now = now_millis()
  if not hold() then
    return lost()
  end
  return { save(pass_at(8), ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), now), now }
end

-- clean: the lease is checked before anything is touched. A declared call
-- cannot read it (on a cluster it is in another slot), so it checks the
-- deadline its run sent: a lease that may have expired may have been taken
-- by another run since.
if DRY_RUN then
  -- A dry run writes nothing and holds no lease.
elseif not DECLARED then
  if not hold() then
    return lost()
  end
else
  local deadline = tonumber(LEASE_TTL)
  if deadline >= 0 and now_millis() >= deadline then
    return redis.error_reply('LEASELOST the run\'s lease may have expired: its deadline ' ..
      deadline .. ' (server time, ms) has passed')
  end
end
local s = scan(ARGV[8] == '1')
if not DRY_RUN and not writable(s) then
  return redis.error_reply('NOPERM the user may not write every key the rules select ' ..
    '(its ACL key patterns are narrower than the rules\' patterns): the call changed none of them')
end
apply(s, DRY_RUN, ARGV[14] == '1')
local saved = ''
if not DRY_RUN and ARGV[9] == '1' then
  saved = save_after(s)
end
return {
  s.cursor, s.looked_at, s.returned, s.matched, s.unchanged, s.vanished, s.moved, s.acted,
  s.micros, stopwatch() - s.started, s.keys, outcome_string(s.outcomes), s.capped, saved, s.pttls,
  s.freed,
}
