-- token_bucket.lua: one token-bucket decision, atomically.
--
-- KEYS[1]  the bucket: a string "<level>:<last update µs>:<units per token>",
--          three decimal integers (one string, one SET with PX: cheaper for
--          Redis than a hash and its separate PEXPIRE)
-- ARGV[1]  rate: units added per microsecond            (integer >= 1)
-- ARGV[2]  per:  units per token                         (integer >= 1)
-- ARGV[3]  burst: capacity in tokens                     (integer >= 1)
-- ARGV[4]  cost: tokens to take, or to give back         (integer, 0 <= cost <= burst)
-- ARGV[5]  mode: 1 spends the cost when allowed, 0 only reports (Peek),
--          2 gives cost tokens back (Refund), never above the burst
-- ARGV[6]  now in µs, or 0 to read Redis TIME (anything but 0 is for tests)
--
-- Units: the Go side reduces rate/per by their gcd, so that a token is `per`
-- units and the bucket gains `rate` units every microsecond. Every quantity is
-- then an integer below 2^53 and exact in a Lua double; no float is stored or
-- returned.
--
-- Reply: {allowed (0|1), remaining tokens, retry_after µs, reset_after µs, now µs}
-- MAX, int_arg and clock come from prelude.lua, which the lua package
-- puts before this script.

local rate = int_arg(1, 1, MAX)
local per = int_arg(2, 1, MAX)
local burst = int_arg(3, 1, MAX)
local cost = int_arg(4, 0, MAX)
local mode = int_arg(5, 0, 2)
local now = int_arg(6, 0, MAX)
if not (rate and per and burst and cost and mode and now) then
  return redis.error_reply('ERR ratelimit: token_bucket: invalid argument')
end
if burst * per > MAX or cost > burst then
  return redis.error_reply('ERR ratelimit: token_bucket: cost or capacity out of range')
end
now = clock(now)

local cap = burst * per
local level, last = cap, now
local l, t, p
local state = redis.call('GET', KEYS[1])
if state then
  local a, b, c = string.match(state, '^(%d+):(%d+):(%d+)$')
  l, t, p = tonumber(a), tonumber(b), tonumber(c)
end
if l and t and p and p >= 1 then
  level, last = l, t
  if p ~= per then
    -- The limit changed since this state was written: keep the same fraction
    -- of a token per token. This is the only place a division may round.
    level = math.floor(level / p * per)
  end
  if level > cap then level = cap end
  if level < 0 then level = 0 end
  if now > last then
    local missing = cap - level
    -- Cap the elapsed time at what refills the bucket, so elapsed * rate
    -- cannot leave the exact range of a double.
    if now - last >= math.ceil(missing / rate) then
      level = cap
    else
      level = level + (now - last) * rate
    end
  end
end
-- If TIME went backwards (failover to a node with another clock), the bucket
-- simply does not refill until it passes the stored time again.
if last > now then now = last end

local need = cost * per
local allowed = 0
if mode == 2 then
  -- Refund: the tokens come back, but the bucket never holds more than its
  -- capacity. A full bucket is the same as no state at all.
  allowed = 1
  if cost > 0 and level < cap then
    if need >= cap - level then
      level = cap
      redis.call('DEL', KEYS[1])
    else
      level = level + need
      local reset_ms = math.ceil((cap - level) / rate / 1000)
      if reset_ms < 1 then reset_ms = 1 end
      redis.call('SET', KEYS[1], string.format('%d:%d:%d', level, now, per), 'PX', reset_ms)
    end
  end
elseif level >= need then
  allowed = 1
  if mode == 1 and cost > 0 then
    level = level - need
    local reset_ms = math.ceil((cap - level) / rate / 1000)
    if reset_ms < 1 then reset_ms = 1 end
    redis.call('SET', KEYS[1], string.format('%d:%d:%d', level, now, per), 'PX', reset_ms)
  end
end

local retry_after = 0
if allowed == 0 then
  retry_after = math.ceil((need - level) / rate)
end
return {allowed, math.floor(level / per), retry_after, math.ceil((cap - level) / rate), now}
