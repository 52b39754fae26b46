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
--          a number of -1 or an empty type means "no such condition".
-- ARGV[2]  the candidate sets of this batch, separated by ';'; each set is a
--          ','-separated list of 1-based rule indices in rule order.
-- ARGV[3]  one byte per key: the 1-based index of that key's candidate set.
--
-- Reply    a two-element array:
--          1. a string with one byte per key: 0 the key had vanished, 1 no
--             rule's conditions held (key left as it was), 1 + r rule r acted
--             on it (or, in a dry run, would have);
--          2. the microseconds the script ran, by the server's clock, which
--             the job uses to size its batches to a time budget.
--
-- All checks run before the first write, so an error (for example OBJECT
-- IDLETIME under an LFU eviction policy) aborts the call with nothing applied.

local VANISHED, UNCHANGED = 0, 1

local function parse_rules(spec)
  local rules = {}
  for text in string.gmatch(spec, '[^;]+') do
    local f = {}
    for field in string.gmatch(text .. ',', '([^,]*),') do
      f[#f + 1] = field
    end
    rules[#rules + 1] = {
      delete = f[1] == 'd',
      ttl = tonumber(f[2]),
      no_ttl = f[3] == '1',
      ttl_below = tonumber(f[4]),
      ttl_above = tonumber(f[5]),
      type = f[6],
      idle_above = tonumber(f[7]),
    }
  end
  return rules
end

local function parse_sets(spec)
  local sets = {}
  for text in string.gmatch(spec, '[^;]+') do
    local set = {}
    for index in string.gmatch(text, '[^,]+') do
      set[#set + 1] = tonumber(index)
    end
    sets[#sets + 1] = set
  end
  return sets
end

-- True when every condition of `rule` holds for `key`, whose PTTL is `pttl`.
-- TYPE and OBJECT IDLETIME are asked only when a rule needs them.
local function holds(rule, key, pttl)
  if rule.no_ttl and pttl ~= -1 then return false end
  if rule.ttl_below >= 0 and (pttl < 0 or pttl >= rule.ttl_below) then return false end
  if rule.ttl_above >= 0 and (pttl < 0 or pttl <= rule.ttl_above) then return false end
  -- An expire rule takes a key only when it would shorten its life.
  if not rule.delete and pttl >= 0 and pttl <= rule.ttl then return false end
  if rule.type ~= '' and redis.call('TYPE', key).ok ~= rule.type then return false end
  if rule.idle_above >= 0 and redis.call('OBJECT', 'IDLETIME', key) <= rule.idle_above then
    return false
  end
  return true
end

local started = redis.call('TIME')
local rules = parse_rules(ARGV[1])
local sets = parse_sets(ARGV[2])
local set_of = ARGV[3]

-- Phase 1: decide every key, writing nothing.
local outcome = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local pttl = redis.call('PTTL', key)
  local result = UNCHANGED
  if pttl == -2 then
    result = VANISHED
  else
    for _, r in ipairs(sets[string.byte(set_of, i)]) do
      if holds(rules[r], key, pttl) then
        result = 1 + r
        break
      end
    end
  end
  outcome[i] = result
end

-- Phase 2: act.
if not DRY_RUN then
  for i = 1, #KEYS do
    local result = outcome[i]
    if result > UNCHANGED then
      local rule = rules[result - 1]
      if rule.delete then
        redis.call('UNLINK', KEYS[i])
      else
        redis.call('PEXPIRE', KEYS[i], rule.ttl)
      end
    end
  end
end

for i = 1, #outcome do
  outcome[i] = string.char(outcome[i])
end
local ended = redis.call('TIME')
local micros = (tonumber(ended[1]) - tonumber(started[1])) * 1000000
  + tonumber(ended[2]) - tonumber(started[2])
return { table.concat(outcome), micros }
