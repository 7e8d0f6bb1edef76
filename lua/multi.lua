-- multi.lua: one all-or-nothing decision over several quotas of one
-- identity, atomically: every quota is checked first, and the costs are
-- spent only if every quota allows its own. If any quota denies, nothing is
-- spent anywhere.
--
-- Each quota is counted exactly as its single-algorithm script counts it
-- (token_bucket.lua, sliding_window.lua, fixed_window.lua; the same state
-- layout, the same arithmetic), in two phases: load and check all, then
-- write all. The quotas' keys must share the identity's hash tag.
--
-- KEYS[i]  the state of quota i (the key layout of its algorithm)
-- KEYS[n+1] refunds only: the refund's own key (see remember in prelude.lua)
-- ARGV[1]  number of quotas n, = #KEYS (n+1 for a refund)  (1 to 16)
-- ARGV[2]  mode: 1 spends the costs when all allow, 0 only reports (Peek),
--          2 gives every cost back (Refund)
-- ARGV[3]  now in µs, or 0 to read Redis TIME (anything but 0 is for tests)
-- ARGV[4 + 5(i-1) ...] quota i: algorithm (0 token bucket, 1 sliding window,
--          3 fixed window), its three parameters (as ARGV[1..3] of its own
--          script), cost
-- ARGV[4 + 5n], ARGV[5 + 5n]  refunds only: when the refunded call was
--          decided (µs), and how long to remember the refund's key (ms)
--
-- A quota with cost 0 always fits: it is left out of the decision.
--
-- Reply: {allowed (0|1), now µs, then for each quota:
--         allowed alone (0|1), remaining, retry_after µs, reset_after µs}
-- For a denied call, a quota's retry_after is how long until its own cost
-- fits; the call as a whole fits after the longest of them at the earliest.
-- MAX, int_arg, clock and remember come from prelude.lua, which the lua
-- package puts before this script.

local function is_int(v)
  return v and v == math.floor(v)
end

local count = int_arg(1, 1, 16)
local mode = int_arg(2, 0, 2)
local now = int_arg(3, 0, MAX)
local extra = 0
if mode == 2 then extra = 1 end
if not (count and mode and now) or count + extra ~= #KEYS or #ARGV ~= 3 + 5 * count + 2 * extra then
  return redis.error_reply('ERR ratelimit: multi: invalid argument')
end
local spent_at, keep = 0, 0
if mode == 2 then
  spent_at, keep = int_arg(4 + 5 * count, 0, MAX), int_arg(5 + 5 * count, 1, MAX)
  if not (spent_at and keep) then
    return redis.error_reply('ERR ratelimit: multi: invalid refund argument')
  end
end
now = clock(now)

-- Token bucket (see token_bucket.lua): a = rate (units per µs), b = per
-- (units per token), c = burst (tokens).
local function token_bucket(key, rate, per, burst, qnow)
  if burst * per > MAX then return nil end
  local q = {}
  local cap = burst * per
  local level, last, expiry = cap, qnow, 0
  local l, t, p, e
  local state = redis.call('GET', key)
  if state then
    local a, b, c, d = string.match(state, '^(%d+):(%d+):(%d+):?(%d*)$')
    l, t, p, e = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
  end
  if l and t and p and p >= 1 then
    level, last, expiry = l, t, e or 0
    if p ~= per then level = math.floor(level / p * per) end
    if level > cap then level = cap end
    if level < 0 then level = 0 end
    if qnow > last then
      local missing = cap - level
      if qnow - last >= math.ceil(missing / rate) then
        level = cap
      else
        level = level + (qnow - last) * rate
      end
    end
  end
  if last > qnow then qnow = last end
  -- stale: the state outlives its TTL under this limit (the limit changed).
  q.stale = state and level < cap and qnow + (cap - level) / rate > expiry
  function q.fits(cost) return level >= cost * per end
  function q.spend(cost) level = level - cost * per end
  function q.refund(cost)
    if level >= cap then return false end
    local need = cost * per
    if need >= cap - level then level = cap else level = level + need end
    return true
  end
  function q.write()
    if level >= cap then
      redis.call('DEL', key)
      return
    end
    local reset_ms = math.ceil((cap - level) / rate / 1000)
    if reset_ms < 1 then reset_ms = 1 end
    redis.call('SET', key, string.format('%d:%d:%d:%d', level, qnow, per, qnow + reset_ms * 1000), 'PX', reset_ms)
  end
  function q.report(cost, fits)
    local retry = 0
    if not fits then retry = math.ceil((cost * per - level) / rate) end
    return math.floor(level / per), retry, math.ceil((cap - level) / rate)
  end
  q.now = function() return qnow end
  return q
end

-- Sliding window (see sliding_window.lua): a = quota, b = window in ticks,
-- c = tick (µs).
local function sliding_window(key, quota, ticks, tick, qnow)
  if ticks > MAX / quota or ticks > MAX / 4 / tick then return nil end
  local q = {}
  local window = ticks * tick
  local state = redis.call('HMGET', key, 's', 'c', 'q', 'p')
  local s, c, pq, p = tonumber(state[1]), tonumber(state[2]), tonumber(state[3]), tonumber(state[4])
  local valid = s and c and pq and p and p >= 1 and c >= 0 and pq >= 0 and
    is_int(s) and is_int(p) and is_int(c) and is_int(pq)
  if valid and s > qnow then qnow = s end
  local start = qnow - qnow % window
  local cur, prev = 0, 0
  if valid then
    if p ~= window then
      local ostart = qnow - qnow % p
      if s == ostart then
        cur = math.ceil(pq * (p - (qnow - s)) / p) + c
      elseif s == ostart - p then
        cur = math.ceil(c * (p - (qnow - ostart)) / p)
      end
    elseif s == start then
      cur, prev = c, pq
    elseif s == start - window then
      prev = c
    end
  end
  if cur > quota then cur = quota end
  if prev > quota then prev = quota end
  -- stale: an estimate carried over from a window of another length.
  q.stale = valid and p ~= window and cur > 0
  local elapsed = math.floor((qnow - start) / tick)
  local function weighted(n) return math.ceil(n * (ticks - elapsed) / ticks) end
  local function first_tick(n, room)
    if n == 0 then return 0 end
    local k = math.floor(room * ticks / n)
    if k >= ticks then return 0 end
    return ticks - k
  end
  function q.fits(cost) return weighted(prev) + cur + cost <= quota end
  function q.spend(cost) cur = cur + cost end
  function q.refund(cost, at)
    if at >= start and at < start + window and cur > 0 then
      cur = math.max(cur - cost, 0)
      return true
    elseif at >= start - window and at < start and prev > 0 then
      prev = math.max(prev - cost, 0)
      return true
    end
    return false
  end
  function q.write()
    if cur + prev == 0 then
      redis.call('DEL', key)
      return
    end
    redis.call('HSET', key, 's', start, 'c', cur, 'q', prev, 'p', window)
    redis.call('PEXPIRE', key, math.ceil((start + 2 * window - qnow) / 1000))
  end
  function q.report(cost, fits)
    local estimate = weighted(prev) + cur
    local retry = 0
    if not fits then
      local at
      if cur + cost <= quota then
        at = start + first_tick(prev, quota - cur - cost) * tick
      else
        at = start + window + first_tick(cur, quota - cost) * tick
      end
      retry = at - qnow
    end
    local reset = 0
    if cur > 0 then
      reset = start + 2 * window - qnow
    elseif estimate > 0 then
      reset = start + window - qnow
    end
    local remaining = 0
    if estimate < quota then remaining = quota - estimate end
    return remaining, retry, reset
  end
  q.now = function() return qnow end
  return q
end

-- Fixed window (see fixed_window.lua): a = quota, b = window (µs), c = 0.
local function fixed_window(key, quota, window, zero, qnow)
  if window > MAX / 4 or zero ~= 0 then return nil end
  local q = {}
  local state = redis.call('HMGET', key, 's', 'p', 'c')
  local s, p, c = tonumber(state[1]), tonumber(state[2]), tonumber(state[3])
  local valid = s and p and c and p >= 1 and c >= 0 and is_int(s) and is_int(p) and is_int(c)
  if valid and s > qnow then qnow = s end
  local start = qnow - qnow % window
  local spent = 0
  if valid and s < start + window and s + p > start then spent = c end
  local until_end = start + window - qnow
  -- stale: units carried over from a window of another length.
  q.stale = spent > 0 and p ~= window
  function q.fits(cost) return spent + cost <= quota end
  function q.spend(cost) spent = spent + cost end
  function q.refund(cost, at)
    if spent == 0 or at < s or at >= s + p then return false end
    spent = math.max(spent - cost, 0)
    return true
  end
  function q.write()
    if spent == 0 then
      redis.call('DEL', key)
      return
    end
    redis.call('HSET', key, 's', start, 'p', window, 'c', spent)
    redis.call('PEXPIRE', key, math.ceil(until_end / 1000))
  end
  function q.report(cost, fits)
    local retry, reset = 0, 0
    if not fits then retry = until_end end
    if spent > 0 then reset = until_end end
    local remaining = 0
    if spent < quota then remaining = quota - spent end
    return remaining, retry, reset
  end
  q.now = function() return qnow end
  return q
end

local algorithms = {[0] = token_bucket, [1] = sliding_window, [3] = fixed_window}

-- Phase 1: load every quota and check its cost, writing nothing.
local quotas, costs, fits = {}, {}, {}
local all = true
for i = 1, count do
  local base = 3 + 5 * (i - 1)
  local alg = int_arg(base + 1, 0, 3)
  -- c is the token bucket's burst and the sliding window's tick, both at
  -- least 1 as in their own scripts; the fixed window ignores it.
  local cmin = 1
  if alg == 3 then cmin = 0 end
  local a, b, c = int_arg(base + 2, 1, MAX), int_arg(base + 3, 1, MAX), int_arg(base + 4, cmin, MAX)
  local cost = int_arg(base + 5, 0, MAX)
  local make = alg and algorithms[alg]
  if not (make and a and b and c and cost) then
    return redis.error_reply('ERR ratelimit: multi: invalid argument for quota ' .. i)
  end
  local q = make(KEYS[i], a, b, c, now)
  if not q then
    return redis.error_reply('ERR ratelimit: multi: quota ' .. i .. ' out of range')
  end
  if alg == 0 then
    if cost > c then return redis.error_reply('ERR ratelimit: multi: cost above burst for quota ' .. i) end
  elseif cost > a then
    return redis.error_reply('ERR ratelimit: multi: cost above quota for quota ' .. i)
  end
  quotas[i], costs[i] = q, cost
  if mode == 2 then
    fits[i] = true
  else
    fits[i] = cost == 0 or q.fits(cost)
    all = all and fits[i]
  end
end

-- Phase 2: spend (or give back) everywhere, or nowhere. A quota whose state
-- was written under another limit is rewritten by any call but a Peek, so
-- that its TTL covers what the current limit needs.
local fresh = mode == 2 and remember(KEYS[count + 1], keep)
for i = 1, count do
  local q, cost = quotas[i], costs[i]
  local write = mode ~= 0 and q.stale
  if cost > 0 then
    if fresh then
      write = q.refund(cost, spent_at) or write
    elseif mode == 1 and all then
      q.spend(cost)
      write = true
    end
  end
  if write then q.write() end
end

local reply = {0, now}
if all then reply[1] = 1 end
for i = 1, count do
  local remaining, retry, reset = quotas[i].report(costs[i], fits[i])
  local ok = 0
  if fits[i] then ok = 1 end
  local base = 2 + 4 * (i - 1)
  reply[base + 1], reply[base + 2], reply[base + 3], reply[base + 4] = ok, remaining, retry, reset
end
return reply
