-- redis-janitor clean script, version v2.
--
-- Cleans one stretch of the keyspace: runs SCAN steps from a cursor until a
-- time budget is spent, matches each key's name against the rules' patterns,
-- re-checks the key against the conditions of the rules it matched, in rule
-- order, and applies the first rule whose conditions all hold. The keys never
-- cross the network, and Redis runs the script atomically and freezes time
-- while it runs, so a key cannot change or expire between the check and the
-- action.
--
-- The binary prepends a header to this body: an optional `#!lua flags=...`
-- shebang (Redis 7+) and `local DRY_RUN = true|false`. With DRY_RUN the script
-- decides exactly as it would otherwise, but writes nothing.
--
-- KEYS     none: the script finds its keys with SCAN.
-- ARGV[1]  the cursor to SCAN from.
-- ARGV[2]  the COUNT of each SCAN step.
-- ARGV[3]  the scan budget in microseconds: each SCAN step after the first
--          looks at as many keys as the rest of the budget has room for, at
--          the pace of the step before, up to ARGV[2].
-- ARGV[4]  the most keys the call may look at: the COUNTs of its steps.
-- ARGV[5]  the SCAN MATCH pattern; empty for none.
-- ARGV[6]  '1' to return every matched key with its outcome.
-- ARGV[7]  the number of rules, n.
-- ARGV[8 + 8 (r - 1) ...]  rule r, in eight arguments:
--          action: 'd' (UNLINK) or 'e' (PEXPIRE ttl_ms);
--          ttl_ms; no_ttl: '0' or '1'; ttl_below_ms; ttl_above_ms; type;
--          idle_above_s: a number of -1 or an empty type means "no such
--          condition" (the job has validated them: no_ttl never comes with
--          ttl_below, for example);
--          the name matcher: 'A' (every key the SCAN returns: the pattern
--          is '*', or the SCAN MATCH is the pattern itself), 'N' (no key: the
--          pattern has an empty class), 'P' and a Lua pattern (the key starts
--          with what it matches: a glob of a fixed head and a '*'), or 'G' and
--          fields separated by zero bytes: the head, its length, the tail,
--          its length, whether the pattern has a '*' ('1' or '0'), and the
--          middles: Lua patterns, one byte per glob position, for the parts
--          before the first '*', after the last and between two. The job
--          translates Redis's glob semantics exactly.
--
-- Reply    an array:
--          1. the next cursor ('0' at the end of the keyspace);
--          2. the keys looked at (the steps' COUNTs);
--          3. the keys SCAN returned;
--          4. the keys whose name matched a rule's pattern;
--          5. of those, the keys no rule's conditions took;
--          6. of those, the keys gone before their rule acted on them (a key
--             that SCAN returned twice);
--          7. per rule, the keys it acted on (or, in a dry run, would have);
--          8. the microseconds the scan (SCAN and checks) took, and
--          9. the microseconds from the scan's start to the end, by the
--             server's clock;
--          10. with ARGV[6] = '1' the matched keys, else an empty array;
--          11. a string with one byte per key of 10.: 0 the key had
--              vanished; 1 no rule's conditions held (key left as it was);
--              1 + r rule r acted on it (or, in a dry run, would have);
--              128 + r rule r, a delete without conditions, deleted it if it
--              still existed.
--
-- Keys whose first matching rule is a delete without conditions need no
-- check: they are deleted in one UNLINK per rule, whose reply tells how many
-- still existed. Every other key is checked first (PTTL, and TYPE or OBJECT
-- IDLETIME when a rule needs them). All checks run before the first write, so
-- an error (for example OBJECT IDLETIME under an LFU eviction policy) aborts
-- the call with nothing applied.

local VANISHED, UNCHANGED, BLIND = 0, 1, 128
-- The fewest keys a SCAN step looks at: a smaller one costs more than it does.
local MIN_STEP = 10
-- Locals for what the per-key loops call: a global lookup costs a hash probe.
local call, find, tonumber, floor, min, max = redis.call, string.find, tonumber, math.floor, math.min, math.max
-- Keys per UNLINK/EXISTS call, and bytes per string.char call: below Lua's
-- limit on the number of arguments to one function call.
local CHUNK = 4000

-- A name matcher (see ARGV above) as a table.
local function parse_matcher(spec)
  local m = { kind = string.sub(spec, 1, 1) }
  if m.kind == 'P' then
    m.head = '^' .. string.sub(spec, 2)
  elseif m.kind == 'G' then
    local f = {}
    for field in string.gmatch(string.sub(spec, 3) .. '\0', '(.-)%z') do
      f[#f + 1] = field
    end
    m.head, m.head_len = '^' .. f[1], tonumber(f[2])
    m.tail, m.tail_len = '^' .. f[3], tonumber(f[4])
    m.star = f[5] == '1'
    m.middles = {}
    for i = 6, #f do
      m.middles[#m.middles + 1] = f[i]
    end
  end
  return m
end

-- How a rule's conditions are checked (see scan): the common shapes have
-- their own short test.
local GENERAL, UNCONDITIONAL, NO_TTL, DUE_SOON = 0, 1, 2, 3

-- The rules (ARGV[7] onwards) as columns: one array per field, indexed by
-- rule number, which the per-key loop reads as array slots rather than as
-- hash fields; and the groups of consecutive rules with the same pattern,
-- whose matcher then runs once per key.
local function parse_rules()
  local R = {
    n = tonumber(ARGV[7]), delete = {}, ttl = {}, ttl_arg = {}, no_ttl = {}, ttl_below = {},
    ttl_above = {}, type = {}, idle_above = {}, class = {},
    groups = 0, group_kind = {}, group_head = {}, group_matcher = {}, group_first = {}, group_last = {},
  }
  local last_spec
  for r = 1, R.n do
    local at = 8 + 8 * (r - 1)
    local delete, no_ttl = ARGV[at] == 'd', ARGV[at + 2] == '1'
    local below, above, type, idle = ARGV[at + 3], ARGV[at + 4], ARGV[at + 5], ARGV[at + 6]
    -- Strings compared, numbers converted only where the check needs them:
    -- each conversion costs as much as a few keys' checks, on every call.
    local class = GENERAL
    if type == '' and idle == '-1' and above == '-1' then
      if no_ttl then
        class = NO_TTL
      elseif below == '-1' then
        class = delete and UNCONDITIONAL or GENERAL
      elseif delete then
        class = DUE_SOON
      end
    end
    R.class[r], R.delete[r] = class, delete
    -- The PEXPIRE argument as sent: converting the number back would format
    -- it with sprintf on every call.
    R.ttl_arg[r] = ARGV[at + 1]
    if class == DUE_SOON then
      R.ttl_below[r] = tonumber(below)
    elseif class == GENERAL then
      R.no_ttl[r], R.ttl[r], R.type[r] = no_ttl, tonumber(ARGV[at + 1]), type
      R.ttl_below[r], R.ttl_above[r], R.idle_above[r] = tonumber(below), tonumber(above), tonumber(idle)
    end
    local spec = ARGV[at + 7]
    if spec == last_spec then
      R.group_last[R.groups] = r
    else
      local g, m = R.groups + 1, parse_matcher(spec)
      R.groups, last_spec = g, spec
      R.group_kind[g], R.group_head[g], R.group_matcher[g] = m.kind, m.head, m
      R.group_first[g], R.group_last[g] = r, r
    end
  end
  return R
end

-- Whether `key` matches the glob that matcher `m` (kind 'G') describes. A
-- glob is its fixed-width parts split at the '*'s: the head must start the
-- key, the tail end it, and the middles follow in order in between, each at
-- its leftmost place (any later place leaves less room for the rest). Only
-- the pattern '*' matches the empty key (SCAN answers it without matching),
-- and that is kind 'A'.
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
  for first = 1, #keys, CHUNK do
    total = total + call(command, unpack(keys, first, math.min(first + CHUNK - 1, #keys)))
  end
  return total
end

-- How many of `keys` exist; a key listed twice counts once, as for UNLINK.
local function count_existing(keys)
  local seen, unique = {}, {}
  for i = 1, #keys do
    if not seen[keys[i]] then
      seen[keys[i]] = true
      unique[#unique + 1] = keys[i]
    end
  end
  return each_chunk('EXISTS', unique)
end

-- The server's clock, in microseconds.
local function now_micros()
  local now = call('TIME')
  return tonumber(now[1]) * 1000000 + tonumber(now[2])
end

-- Phase 1: SCAN steps and the decision for every key they return, writing
-- nothing. Returns what to write and what to report. One function with
-- locals: its inner loop runs per key, where every table lookup counts.
local function scan(R, report_keys)
  local started = now_micros()
  local cursor, count, budget, max_keys = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local step = { cursor, 'COUNT', count }
  if ARGV[5] ~= '' then
    step = { cursor, 'MATCH', ARGV[5], 'COUNT', count }
  end
  local count_at, next_count = #step, min(count, max_keys)
  local nrules, groups, class_of = R.n, R.groups, R.class
  local group_kind, group_head, group_matcher = R.group_kind, R.group_head, R.group_matcher
  local group_first, group_last = R.group_first, R.group_last
  local delete_of, ttl_of, ttl_arg_of, no_ttl_of = R.delete, R.ttl, R.ttl_arg, R.no_ttl
  local below_of, above_of, type_of, idle_of = R.ttl_below, R.ttl_above, R.type, R.idle_above
  local acted, blind, nblind = {}, {}, {}
  for r = 1, nrules do
    acted[r], blind[r], nblind[r] = 0, {}, 0
  end
  local deletes, expires, reported, outcomes = {}, {}, {}, {}
  local ndeletes, nexpires, looked_at, returned, matched, unchanged, vanished = 0, 0, 0, 0, 0, 0, 0
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
      -- The rules in order, a group of rules with the same pattern at a time;
      -- each rule whose conditions do not hold hands the key to the next.
      local outcome, pttl = nil, nil
      for g = 1, groups do
        local kind = group_kind[g]
        if kind == 'P' and find(key, group_head[g]) or kind == 'G' and matches(key, group_matcher[g])
          or kind == 'A' then
          for r = group_first[g], group_last[g] do
            local class = class_of[r]
            if class == UNCONDITIONAL then
              local n = nblind[r] + 1
              nblind[r], blind[r][n] = n, key
              acted[r] = acted[r] + 1
              outcome = BLIND + r
              break
            end
            if not pttl then
              pttl = call('PTTL', key)
              if pttl == -2 then
                vanished = vanished + 1
                outcome = VANISHED
                break
              end
            end
            -- The conditions, cheapest first; TYPE and OBJECT IDLETIME are
            -- asked only when a rule needs them.
            local holds
            if class == NO_TTL then
              holds = pttl == -1
            elseif class == DUE_SOON then
              holds = pttl >= 0 and pttl < below_of[r]
            else
              local below, above = below_of[r], above_of[r]
              if no_ttl_of[r] then
                holds = pttl == -1
              elseif pttl >= 0 then
                holds = (below < 0 or pttl < below) and (above < 0 or pttl > above)
                  -- An expire rule takes a key only when it would shorten its life.
                  and (delete_of[r] or pttl > ttl_of[r])
              else
                holds = below < 0 and above < 0
              end
              if holds and type_of[r] ~= '' then
                holds = call('TYPE', key).ok == type_of[r]
              end
              if holds and idle_of[r] >= 0 then
                holds = call('OBJECT', 'IDLETIME', key) > idle_of[r]
              end
            end
            if holds then
              if delete_of[r] then
                ndeletes = ndeletes + 1
                deletes[ndeletes] = key
              else
                nexpires = nexpires + 2
                expires[nexpires - 1], expires[nexpires] = key, ttl_arg_of[r]
              end
              acted[r] = acted[r] + 1
              outcome = 1 + r
              break
            end
            outcome = UNCHANGED
          end
          if outcome ~= UNCHANGED then
            break
          end
        end
      end
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
    matched = matched, unchanged = unchanged, vanished = vanished, acted = acted,
    blind = blind, deletes = deletes, expires = expires, keys = reported, outcomes = outcomes,
  }
end

-- Phase 2: acts on the decided keys (a dry run only counts the blind
-- deletes' keys that still exist). The blind deletes' keys that had vanished
-- move from their rules' counts to the vanished ones.
local function apply(s, dry_run)
  for r, keys in ipairs(s.blind) do
    local existed = #keys > 0 and (dry_run and count_existing(keys) or each_chunk('UNLINK', keys)) or 0
    s.acted[r] = s.acted[r] - (#keys - existed)
    s.vanished = s.vanished + #keys - existed
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
    parts[#parts + 1] = string.char(unpack(outcomes, first, math.min(first + CHUNK - 1, #outcomes)))
  end
  return table.concat(parts)
end

local s = scan(parse_rules(), ARGV[6] == '1')
apply(s, DRY_RUN)
return {
  s.cursor, s.looked_at, s.returned, s.matched, s.unchanged, s.vanished, s.acted,
  s.micros, now_micros() - s.started, s.keys, outcome_string(s.outcomes),
}
