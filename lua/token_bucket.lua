-- token_bucket.lua: one token-bucket decision, atomically.
--
-- KEYS[1]  the bucket: a string "<level>:<last update µs>:<units per token>:<expiry µs>",
--          four decimal integers (one string, one SET with PX: cheaper for
--          Redis than a hash and its separate PEXPIRE)
-- KEYS[2]  refunds only: the refund's own key, "<bucket>:refund:<id>", which
--          makes a refund sent twice (a reply lost, the client resending)
--          count once
-- ARGV[1]  rate: units added per microsecond            (integer >= 1)
-- ARGV[2]  per:  units per token                         (integer >= 1)
-- ARGV[3]  burst: capacity in tokens                     (integer >= 1)
-- ARGV[4]  cost: tokens to take, or to give back         (integer, 0 <= cost <= burst)
-- ARGV[5]  mode: 1 spends the cost when allowed, 0 only reports (Peek),
--          2 gives cost tokens back (Refund), never above the burst
-- ARGV[6]  now in µs, or 0 to read Redis TIME (anything but 0 is for tests)
-- ARGV[7]  refunds only: when the refunded spend was decided, µs (unused by
--          the token bucket: tokens are tokens, whenever they were taken)
-- ARGV[8]  refunds only: how long to remember the refund's key, ms
--
-- Units: the Go side reduces rate/per by their gcd, so that a token is `per`
-- units and the bucket gains `rate` units every microsecond. Every quantity is
-- then an integer below 2^53 and exact in a Lua double; no float is stored or
-- returned.
--
-- The stored expiry is when the key's TTL ends. Under an unchanged limit it
-- always covers the refill; after a change of limit (a longer period, a
-- larger burst) a call that writes nothing else still pushes it out when the
-- new limit needs the state for longer, so the state is never forgotten
-- while it still matters.
--
-- Reply: {allowed (0|1), remaining tokens, retry_after µs, reset_after µs, now µs}
-- MAX, int_arg, clock and remember come from prelude.lua, which the lua
-- package puts before this script.

local rate = int_arg(1, 1, MAX)
local per = int_arg(2, 1, MAX)
local burst = int_arg(3, 1, MAX)
local cost = int_arg(4, 0, MAX)
local mode = int_arg(5, 0, 2)
local now = int_arg(6, 0, MAX)
if not (rate and per and burst and cost and mode and now) or (mode == 2) ~= (#ARGV == 8) then
  return redis.error_reply('ERR ratelimit: token_bucket: invalid argument')
end
if burst * per > MAX or cost > burst then
  return redis.error_reply('ERR ratelimit: token_bucket: cost or capacity out of range')
end
local keep = 0
if mode == 2 then
  keep = int_arg(8, 1, MAX)
  if not (int_arg(7, 0, MAX) and keep and #KEYS == 2) then
    return redis.error_reply('ERR ratelimit: token_bucket: invalid refund argument')
  end
end
now = clock(now)

local cap = burst * per
local level, last, expiry = cap, now, 0
local l, t, p, e
local state = redis.call('GET', KEYS[1])
if state then
  local a, b, c, d = string.match(state, '^(%d+):(%d+):(%d+):?(%d*)$')
  l, t, p, e = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
end
if l and t and p and p >= 1 then
  level, last, expiry = l, t, e or 0
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

-- save writes the bucket with a TTL until it is full again; a full bucket is
-- the same as no state at all.
local function save()
  if level >= cap then
    redis.call('DEL', KEYS[1])
    return
  end
  local reset_ms = math.ceil((cap - level) / rate / 1000)
  if reset_ms < 1 then reset_ms = 1 end
  redis.call('SET', KEYS[1], string.format('%d:%d:%d:%d', level, now, per, now + reset_ms * 1000), 'PX', reset_ms)
end

local need = cost * per
local allowed = 0
local write = false
if mode == 2 then
  -- Refund: the tokens come back, once, but the bucket never holds more
  -- than its capacity.
  allowed = 1
  if cost > 0 and remember(KEYS[2], keep) and level < cap then
    if need >= cap - level then level = cap else level = level + need end
    write = true
  end
elseif level >= need then
  allowed = 1
  if mode == 1 and cost > 0 then
    level = level - need
    write = true
  end
end
if not write and mode ~= 0 and state and level < cap and now + (cap - level) / rate > expiry then
  -- Nothing spent, but the state outlives its TTL under this limit.
  write = true
end
if write then save() end

local retry_after = 0
if allowed == 0 then
  retry_after = math.ceil((need - level) / rate)
end
return {allowed, math.floor(level / per), retry_after, math.ceil((cap - level) / rate), now}
