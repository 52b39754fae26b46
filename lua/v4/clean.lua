-- redis-janitor clean script, version v4.
--
-- Cleans one stretch of the keyspace: runs SCAN steps from a cursor until a
-- time budget is spent, matches each key's name against the rules' patterns,
-- re-checks the key against the conditions of the rules it matched, in rule
-- order, and applies the first rule whose conditions all hold. The keys never
-- cross the network, and Redis runs the script atomically and freezes time
-- while it runs, so a key cannot change or expire between the check and the
-- action.
--
-- This file is a template: the binary builds the script for one set of rules
-- (src/script/compile.rs). It prepends a header, an optional `#!lua
-- flags=...` shebang (Redis 7+) and `local DRY_RUN, CLUSTER = ...`, and
-- replaces the two marker lines, `compiled: setup` and `compiled: decide`, with
-- code: the protocol's constants (VANISHED, UNCHANGED, MOVED, BLIND and
-- MIN_STEP, defined
-- in src/script/protocol.rs), the rules' number, the SCAN MATCH pattern and
-- the tables of the globs matched in Lua (`setup`), and the per-key decision,
-- one `if` per pattern and one per rule (`decide`). With DRY_RUN the script
-- decides exactly as it would otherwise, but writes nothing.
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
-- KEYS     none: the script finds its keys with SCAN.
-- ARGV[1]  the cursor to SCAN from.
-- ARGV[2]  the COUNT of each SCAN step.
-- ARGV[3]  the scan budget in microseconds: each SCAN step after the first
--          looks at as many keys as the rest of the budget has room for, at
--          the pace of the step before, up to ARGV[2].
-- ARGV[4]  the most keys the call may look at: the COUNTs of its steps.
-- ARGV[5]  '1' to return every matched key with its outcome.
--
-- Reply    an array:
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
--             server's clock;
--          11. with ARGV[5] = '1' the matched keys, else an empty array;
--          12. a string with one byte per key of 11.: 0 the key had
--              vanished; 1 no rule's conditions held (key left as it was);
--              1 + r rule r acted on it (or, in a dry run, would have);
--              127 the node refused the key (moved); 128 + r rule r, a
--              delete without conditions, deleted it if it still existed
--              (and, on a cluster node, was served here).
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
-- command the script calls, so the write phase cannot fail halfway.

-- Locals for what the per-key loops call: a global lookup costs a hash probe.
local call, try, find, tonumber, floor, min, max =
  redis.call, redis.pcall, string.find, tonumber, math.floor, math.min, math.max
-- Bytes per string.char call: below Lua's limit on the number of arguments
-- to one function call.
local CHUNK = 4000
-- Keys per UNLINK/EXISTS call: as many as a call takes, or one on a cluster
-- node, where one command's keys must share a slot.
local KEYS_PER_CALL = CLUSTER and 1 or CHUNK

-- The protocol's outcome bytes (see the reply, 12.) and the fewest keys a
-- SCAN step looks at (a smaller one costs more than it does); the rules: how
-- many, the SCAN MATCH pattern (nil for none), and the globs that `matches`
-- checks, as tables (see there).
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

-- Runs `command` on each of `keys` that the node serves (CLUSTER): sums the
-- integer replies, and counts the keys the node refused.
local function each_served(command, keys)
  local total, refused = 0, 0
  for i = 1, #keys do
    local reply = try(command, keys[i])
    if type(reply) == 'table' then
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

-- The server's clock, in microseconds.
local function now_micros()
  local now = call('TIME')
  return tonumber(now[1]) * 1000000 + tonumber(now[2])
end

-- Phase 1: SCAN steps and the decision for every key they return, writing
-- nothing. Returns what to write and what to report. One function with
-- locals: its inner loop runs per key, where every table lookup counts.
local function scan(report_keys)
  local started = now_micros()
  local cursor, count, budget, max_keys = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local step = { cursor, 'COUNT', count }
  if SCAN_MATCH then
    step = { cursor, 'MATCH', SCAN_MATCH, 'COUNT', count }
  end
  local count_at, next_count = #step, min(count, max_keys)
  local acted, blind, nblind = {}, {}, {}
  for r = 1, RULES do
    acted[r], blind[r], nblind[r] = 0, {}, 0
  end
  local deletes, expires, reported, outcomes = {}, {}, {}, {}
  local ndeletes, nexpires, looked_at, returned, matched, unchanged, vanished, moved = 0, 0, 0, 0, 0, 0, 0, 0
  local now = started
  repeat
    step[1], step[count_at] = cursor, next_count
    local reply = call('SCAN', unpack(step))
    cursor = reply[1]
    local keys = reply[2]
    looked_at = looked_at + next_count
    returned = returned + #keys
    for i = 1, #keys do
      local key = keys[i]
      -- The rules in order: a key whose name matches a pattern is
      -- UNCHANGED until one of the pattern's rules acts on it (and `break`s
      -- out with its outcome), or PTTL finds it gone (VANISHED) or, on a
      -- cluster node, refused (MOVED).
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
        end
      end
    end
    -- The next step looks at as many keys as the rest of the budget has
    -- room for at this step's pace, so the call fills its budget.
    local before = now
    now = now_micros()
    local room = floor(next_count * (budget - (now - started)) / max(now - before, 1))
    next_count = min(count, max_keys - looked_at, room)
  until cursor == '0' or next_count < MIN_STEP
  return {
    cursor = cursor, started = started, micros = now - started, looked_at = looked_at, returned = returned,
    matched = matched, unchanged = unchanged, vanished = vanished, moved = moved, acted = acted,
    blind = blind, deletes = deletes, expires = expires, keys = reported, outcomes = outcomes,
  }
end

-- Phase 2: acts on the decided keys (a dry run only counts the blind
-- deletes' keys that still exist). The blind deletes' keys that had vanished
-- or that the node refused move from their rules' counts to the vanished or
-- moved ones.
local function apply(s, dry_run)
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
    local expires = s.expires
    for i = 1, #expires, 2 do
      call('PEXPIRE', expires[i], expires[i + 1])
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

local s = scan(ARGV[5] == '1')
apply(s, DRY_RUN)
return {
  s.cursor, s.looked_at, s.returned, s.matched, s.unchanged, s.vanished, s.moved, s.acted,
  s.micros, now_micros() - s.started, s.keys, outcome_string(s.outcomes),
}
