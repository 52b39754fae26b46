-- redis-janitor clean script, version v1.
--
-- Re-checks each candidate key of one batch against the rules whose pattern its
-- name matched, in rule order, and applies the first rule whose conditions all
-- hold. Redis runs the script atomically and freezes time while it runs, so a
-- key cannot change or expire between the check and the action.
--
-- The binary prepends a header to this body: an optional `#!lua flags=...`
-- shebang (Redis 7+) and `local DRY_RUN = true|false`. With DRY_RUN the script
-- decides exactly as it would otherwise, but writes nothing.
--
-- KEYS     the candidate keys.
-- ARGV[1]  the rules, separated by ';'; each rule is
--            action,ttl_ms,no_ttl,ttl_below_ms,ttl_above_ms,type,idle_above_s
--          action is 'd' (UNLINK) or 'e' (PEXPIRE ttl_ms); no_ttl is 0 or 1;
--          a number of -1 or an empty type means "no such condition". The job
--          has validated them (e.g. no_ttl never comes with ttl_below).
-- ARGV[2]  the candidate sets of this batch, separated by ';'; each set is a
--          ','-separated list of 1-based rule indices in rule order.
-- ARGV[3]  one byte per key: the 1-based index of that key's candidate set.
--
-- Reply    a three-element array:
--          1. a string with one byte per key: 0 the key had vanished; 1 no
--             rule's conditions held (key left as it was); 1 + r rule r acted
--             on it (or, in a dry run, would have); 128 + r rule r, a delete
--             without conditions, deleted it if it still existed (see 3.);
--          2. the microseconds the script ran, by the server's clock, which
--             the job uses to size its batches to a time budget;
--          3. per rule, how many of its keys marked 128 + r had vanished.
--
-- Keys whose first candidate rule is a delete without conditions need no
-- check: they are deleted in one UNLINK per rule, whose reply tells how many
-- still existed. Every other key is checked first (PTTL, and TYPE or OBJECT
-- IDLETIME when a rule needs them). All checks run before the first write, so
-- an error (for example OBJECT IDLETIME under an LFU eviction policy) aborts
-- the call with nothing applied.

local VANISHED, UNCHANGED, BLIND = 0, 1, 128
-- Locals for what the per-key loops call: a global lookup costs a hash probe.
local call, sub, byte = redis.call, string.sub, string.byte
-- Keys per UNLINK/EXISTS call, and bytes per string.char call: below Lua's
-- limit on the number of arguments to one function call.
local CHUNK = 4000

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
    }
    rule.blind = rule.delete and not rule.no_ttl and rule.ttl_below < 0
      and rule.ttl_above < 0 and rule.type == '' and rule.idle_above < 0
    rules[#rules + 1] = rule
  end
  return rules
end

-- A ','-separated list of 1-based rule indices, as a table.
local function parse_set(text)
  local set = {}
  for index in string.gmatch(text, '[^,]+') do
    set[#set + 1] = tonumber(index)
  end
  return set
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

-- Phase 1: decides every key of KEYS, writing nothing. Returns the outcome
-- bytes and the writes to make. One loop with locals: it runs per key.
local function decide(rules, sets, set_of)
  local outcome, deletes, expires, blind = {}, {}, {}, {}
  local ndeletes, nexpires = 0, 0
  for i = 1, #KEYS do
    local key = KEYS[i]
    local set = sets[byte(set_of, i)]
    local first = set[1]
    local result
    if rules[first].blind then
      result = BLIND + first
      local keys = blind[first]
      if not keys then
        keys = {}
        blind[first] = keys
      end
      keys[#keys + 1] = key
    else
      local pttl = call('PTTL', key)
      result = UNCHANGED
      if pttl == -2 then
        result = VANISHED
      else
        for k = 1, #set do
          local r = set[k]
          local rule = rules[r]
          -- The conditions, cheapest first; TYPE and OBJECT IDLETIME are
          -- asked only when a rule needs them.
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
            result = 1 + r
            if rule.delete then
              ndeletes = ndeletes + 1
              deletes[ndeletes] = key
            else
              nexpires = nexpires + 2
              expires[nexpires - 1], expires[nexpires] = key, rule.ttl_arg
            end
            break
          end
        end
      end
    end
    outcome[i] = result
  end
  return { rules = rules, outcome = outcome, deletes = deletes, expires = expires, blind = blind }
end

-- Phase 2: acts on the decided keys (a dry run only counts the blind
-- deletes' keys that still exist). Returns, per rule, how many of its blind
-- deletes' keys had vanished.
local function apply(batch, dry_run)
  local gone = {}
  for r = 1, #batch.rules do
    gone[r] = 0
  end
  for r, keys in pairs(batch.blind) do
    local existed = dry_run and count_existing(keys) or each_chunk('UNLINK', keys)
    gone[r] = #keys - existed
  end
  if not dry_run then
    each_chunk('UNLINK', batch.deletes)
    local expires = batch.expires
    for i = 1, #expires, 2 do
      call('PEXPIRE', expires[i], expires[i + 1])
    end
  end
  return gone
end

-- The outcome bytes as one string.
local function outcome_string(batch)
  local outcome, parts = batch.outcome, {}
  for first = 1, #outcome, CHUNK do
    parts[#parts + 1] = string.char(unpack(outcome, first, math.min(first + CHUNK - 1, #outcome)))
  end
  return table.concat(parts)
end

-- Microseconds since `started`, a TIME reply.
local function micros_since(started)
  local now = call('TIME')
  return (tonumber(now[1]) - tonumber(started[1])) * 1000000
    + tonumber(now[2]) - tonumber(started[2])
end

local started = call('TIME')
local rules = parse_rules(ARGV[1])
local sets = {}
for text in string.gmatch(ARGV[2], '[^;]+') do
  sets[#sets + 1] = parse_set(text)
end
local set_of = ARGV[3]

local batch = decide(rules, sets, set_of)
local gone = apply(batch, DRY_RUN)
return { outcome_string(batch), micros_since(started), gone }
