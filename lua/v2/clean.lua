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
-- ARGV[3]  the scan budget in microseconds: no SCAN step starts that would,
--          at the pace of the last one, end after it.
-- ARGV[4]  the most keys the call may look at: the COUNTs of its steps.
-- ARGV[5]  the SCAN MATCH pattern; empty for none.
-- ARGV[6]  '1' to return every matched key with its outcome.
-- ARGV[7]  the rules, separated by ';'; each rule is
--            action,ttl_ms,no_ttl,ttl_below_ms,ttl_above_ms,type,idle_above_s
--          action is 'd' (UNLINK) or 'e' (PEXPIRE ttl_ms); no_ttl is 0 or 1;
--          a number of -1 or an empty type means "no such condition". The job
--          has validated them (e.g. no_ttl never comes with ttl_below).
-- ARGV[7 + r]  rule r's name matcher, fields separated by zero bytes: 'A'
--          (every key), 'S' (every key the SCAN MATCH returns), 'N' (no key:
--          the pattern has an empty class), or 'G' then
--          the head, its length, the tail, its length, whether the pattern
--          has a '*' ('1' or '0'), and the middles: Lua patterns, one byte per
--          glob position, for the parts before the first '*', after the last
--          and between two. The job translates Redis's glob semantics exactly.
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
--          9. the microseconds the whole script took, by the server's clock;
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
-- Locals for what the per-key loops call: a global lookup costs a hash probe.
local call, find, tonumber = redis.call, string.find, tonumber
-- Keys per UNLINK/EXISTS call, and bytes per string.char call: below Lua's
-- limit on the number of arguments to one function call.
local CHUNK = 4000

-- Redis 3.2 to 4.0 replicate a script that writes after SCAN only this way;
-- later versions always do and keep the call as a no-op.
if not DRY_RUN and redis.replicate_commands then
  redis.replicate_commands()
end

-- A name matcher (ARGV[7 + r]) as a table.
local function parse_matcher(spec)
  local f = {}
  for field in string.gmatch(spec .. '\0', '(.-)%z') do
    f[#f + 1] = field
  end
  local m = { kind = f[1] }
  if m.kind == 'G' then
    m.head, m.head_len = '^' .. f[2], tonumber(f[3])
    m.tail, m.tail_len = '^' .. f[4], tonumber(f[5])
    m.star = f[6] == '1'
    m.middles = {}
    for i = 7, #f do
      m.middles[#m.middles + 1] = f[i]
    end
  end
  return m
end

local function parse_rules(spec)
  local rules = {}
  for text in string.gmatch(spec, '[^;]+') do
    local f = {}
    for field in string.gmatch(text .. ',', '([^,]*),') do
      f[#f + 1] = field
    end
    local rule = {
      delete = f[1] == 'd',
      ttl = tonumber(f[2]),
      -- The PEXPIRE argument as sent: converting the number back would
      -- format it with sprintf on every call.
      ttl_arg = f[2],
      no_ttl = f[3] == '1',
      ttl_below = tonumber(f[4]),
      ttl_above = tonumber(f[5]),
      type = f[6],
      idle_above = tonumber(f[7]),
      matcher = parse_matcher(ARGV[7 + #rules + 1]),
    }
    rule.blind = rule.delete and not rule.no_ttl and rule.ttl_below < 0
      and rule.ttl_above < 0 and rule.type == '' and rule.idle_above < 0
    rules[#rules + 1] = rule
  end
  return rules
end

-- Whether `key` matches the glob `m` describes. A glob is its fixed-width
-- parts split at the '*'s: the head must start the key, the tail end it, and
-- the middles follow in order in between, each at its leftmost place (any
-- later place leaves less room for the rest). Only the pattern '*' matches
-- the empty key (SCAN answers it without matching), and that is kind 'A'.
local function matches(key, m)
  if m.kind ~= 'G' then
    return m.kind ~= 'N'
  end
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

-- The outcome byte of `key` under `rules` (see the reply above), or nil when
-- no rule's pattern matches it.
local function decide(key, rules)
  local outcome, pttl = nil, nil
  for r = 1, #rules do
    local rule = rules[r]
    if matches(key, rule.matcher) then
      if rule.blind then
        return BLIND + r
      end
      if not pttl then
        pttl = call('PTTL', key)
        if pttl == -2 then
          return VANISHED
        end
      end
      -- The conditions, cheapest first; TYPE and OBJECT IDLETIME are asked
      -- only when a rule needs them.
      local holds
      if rule.no_ttl then
        holds = pttl == -1
      elseif pttl >= 0 then
        holds = (rule.ttl_below < 0 or pttl < rule.ttl_below)
          and (rule.ttl_above < 0 or pttl > rule.ttl_above)
          -- An expire rule takes a key only when it would shorten its life.
          and (rule.delete or pttl > rule.ttl)
      else
        holds = rule.ttl_below < 0 and rule.ttl_above < 0
      end
      if holds and rule.type ~= '' then
        holds = call('TYPE', key).ok == rule.type
      end
      if holds and rule.idle_above >= 0 then
        holds = call('OBJECT', 'IDLETIME', key) > rule.idle_above
      end
      if holds then
        return 1 + r
      end
      outcome = UNCHANGED
    end
  end
  return outcome
end

-- Phase 1: SCAN steps and the decision for every key they return, writing
-- nothing. Returns what to write and what to report.
local function scan(rules, report_keys)
  local started = now_micros()
  local cursor, count, budget, max_keys = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local step = { cursor, 'COUNT', count }
  if ARGV[5] ~= '' then
    step = { cursor, 'MATCH', ARGV[5], 'COUNT', count }
  end
  local s = {
    looked_at = 0, returned = 0, matched = 0, unchanged = 0, vanished = 0,
    acted = {}, deletes = {}, expires = {}, blind = {}, keys = {}, outcomes = {},
  }
  for r = 1, #rules do
    s.acted[r] = 0
  end
  local ndeletes, nexpires = 0, 0
  local now, last_step = started, 0
  repeat
    step[1] = cursor
    local reply = call('SCAN', unpack(step))
    cursor = reply[1]
    local keys = reply[2]
    s.looked_at = s.looked_at + count
    s.returned = s.returned + #keys
    for i = 1, #keys do
      local key = keys[i]
      local outcome = decide(key, rules)
      if outcome then
        s.matched = s.matched + 1
        if report_keys then
          s.keys[s.matched], s.outcomes[s.matched] = key, outcome
        end
        if outcome >= BLIND then
          local r = outcome - BLIND
          local blind = s.blind[r]
          if not blind then
            blind = {}
            s.blind[r] = blind
          end
          blind[#blind + 1] = key
          s.acted[r] = s.acted[r] + 1
        elseif outcome > UNCHANGED then
          local r = outcome - 1
          local rule = rules[r]
          if rule.delete then
            ndeletes = ndeletes + 1
            s.deletes[ndeletes] = key
          else
            nexpires = nexpires + 2
            s.expires[nexpires - 1], s.expires[nexpires] = key, rule.ttl_arg
          end
          s.acted[r] = s.acted[r] + 1
        elseif outcome == UNCHANGED then
          s.unchanged = s.unchanged + 1
        else
          s.vanished = s.vanished + 1
        end
      end
    end
    local before = now
    now = now_micros()
    last_step = now - before
  until cursor == '0' or now - started + last_step > budget or s.looked_at + count > max_keys
  s.cursor, s.micros = cursor, now - started
  return s
end

-- Phase 2: acts on the decided keys (a dry run only counts the blind
-- deletes' keys that still exist). The blind deletes' keys that had vanished
-- move from their rules' counts to the vanished ones.
local function apply(s, dry_run)
  for r, keys in pairs(s.blind) do
    local existed = dry_run and count_existing(keys) or each_chunk('UNLINK', keys)
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

local started = now_micros()
local report_keys = ARGV[6] == '1'
local s = scan(parse_rules(ARGV[7]), report_keys)
apply(s, DRY_RUN)
return {
  s.cursor, s.looked_at, s.returned, s.matched, s.unchanged, s.vanished, s.acted,
  s.micros, now_micros() - started, s.keys, outcome_string(s.outcomes),
}
