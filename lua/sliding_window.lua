-- sliding_window.lua: one sliding-window decision, atomically.
--
-- The counter approximation of a sliding window: units are counted in fixed
-- windows aligned to the Unix epoch, and the usage of the window that slides
-- over [now - window, now] is estimated as
--
--   ceil(previous * (window - elapsed) / window) + current
--
-- where elapsed is the time since the current window began: the previous
-- window's count is assumed spread evenly over it. A call of cost n is
-- allowed when estimate + n <= quota. O(1) time and memory per identity.
--
-- Time is counted in ticks of `tick` µs (1 unless the window is so long that
-- previous * ticks-per-window could pass 2^53; the Go side picks the tick),
-- so every product below is an exact integer in a Lua double.
--
-- KEYS[1]  a hash {s = start of the current window (µs), c = units in it,
--          q = units in the window before it, p = window length (µs)}
-- ARGV[1]  quota: units per window                      (integer >= 1)
-- ARGV[2]  window length in ticks                       (integer >= 1)
-- ARGV[3]  tick in µs                                   (integer >= 1)
-- KEYS[2]  refunds only: the refund's own key (see remember in prelude.lua)
-- ARGV[4]  cost                                         (integer, 0 <= cost <= quota)
-- ARGV[5]  mode: 1 spends the cost when allowed, 0 only reports (Peek),
--          2 gives cost units back (Refund), never below 0 spent
-- ARGV[6]  now in µs, or 0 to read Redis TIME (anything but 0 is for tests)
-- ARGV[7]  refunds only: when the refunded spend was decided, µs: it is
--          given back to the window it was counted in (the current or the
--          previous one), and not at all once that window has passed
-- ARGV[8]  refunds only: how long to remember the refund's key, ms
--
-- A cost of 0 is always allowed.
--
-- Reply: {allowed (0|1), remaining, retry_after µs, reset_after µs, now µs}
-- MAX, int_arg, clock and remember come from prelude.lua, which the lua
-- package puts before this script.

local quota = int_arg(1, 1, MAX)
local ticks = int_arg(2, 1, MAX)
local tick = int_arg(3, 1, MAX)
local cost = int_arg(4, 0, MAX)
local mode = int_arg(5, 0, 2)
local now = int_arg(6, 0, MAX)
if not (quota and ticks and tick and cost and mode and now) or (mode == 2) ~= (#ARGV == 8) then
  return redis.error_reply('ERR ratelimit: sliding_window: invalid argument')
end
if cost > quota or ticks > MAX / quota or ticks > MAX / 4 / tick then
  return redis.error_reply('ERR ratelimit: sliding_window: cost or window out of range')
end
local spent_at, keep = 0, 0
if mode == 2 then
  spent_at, keep = int_arg(7, 0, MAX), int_arg(8, 1, MAX)
  if not (spent_at and keep and #KEYS == 2) then
    return redis.error_reply('ERR ratelimit: sliding_window: invalid refund argument')
  end
end
local window = ticks * tick
now = clock(now)

local state = redis.call('HMGET', KEYS[1], 's', 'c', 'q', 'p')
local s, c, q, p = tonumber(state[1]), tonumber(state[2]), tonumber(state[3]), tonumber(state[4])
local valid = s and c and q and p and p >= 1 and c >= 0 and q >= 0 and
  s == math.floor(s) and p == math.floor(p) and c == math.floor(c) and q == math.floor(q)
-- If TIME went backwards (failover to a node with another clock), count in
-- the window already written rather than in an earlier one.
if valid and s > now then now = s end
local start = now - now % window
local cur, prev = 0, 0
if valid then
  if p ~= window then
    -- The limit changed (another Per) since this state was written: carry
    -- the old estimate over as units spent in the current window, so that
    -- no recent use is forgotten. This is the only place a product may
    -- leave the exact range; it is rounded up.
    local ostart = now - now % p
    if s == ostart then
      cur = math.ceil(q * (p - (now - s)) / p) + c
    elseif s == ostart - p then
      cur = math.ceil(c * (p - (now - ostart)) / p)
    end
  elseif s == start then
    cur, prev = c, q
  elseif s == start - window then
    prev = c
  end
end
-- After a lower quota (a tier downgrade), more may have been spent than the
-- new quota: count it as the whole quota, which keeps every product exact.
if cur > quota then cur = quota end
if prev > quota then prev = quota end
-- An estimate carried over from a window of another length is written as
-- this window's count by any call but a Peek, a denial included, with this
-- window's TTL: it is not forgotten with the old window's shorter one.
local write = valid and p ~= window and cur > 0 and mode ~= 0

-- The previous window's weight, in ticks left of the current window.
local elapsed = math.floor((now - start) / tick)
local function weighted(n, e)
  return math.ceil(n * (ticks - e) / ticks)
end
-- first_tick returns the first tick e of a window at which
-- weighted(n, e) <= room, for 0 <= room: ticks when only the next window
-- will do.
local function first_tick(n, room)
  if n == 0 then return 0 end
  local k = math.floor(room * ticks / n)
  if k >= ticks then return 0 end
  return ticks - k
end

local estimate = weighted(prev, elapsed) + cur
local allowed = 0
if mode == 2 then
  allowed = 1
  if cost > 0 and remember(KEYS[2], keep) then
    -- Give back to the window the spend was counted in.
    if spent_at >= start and spent_at < start + window and cur > 0 then
      cur = math.max(cur - cost, 0)
      write = true
    elseif spent_at >= start - window and spent_at < start and prev > 0 then
      prev = math.max(prev - cost, 0)
      write = true
    end
  end
elseif cost == 0 or estimate + cost <= quota then
  allowed = 1
  if mode == 1 and cost > 0 then
    cur = cur + cost
    write = true
  end
end
if write then
  if cur + prev == 0 then
    redis.call('DEL', KEYS[1])
  else
    redis.call('HSET', KEYS[1], 's', start, 'c', cur, 'q', prev, 'p', window)
    redis.call('PEXPIRE', KEYS[1], math.ceil((start + 2 * window - now) / 1000))
  end
end
estimate = weighted(prev, elapsed) + cur

local retry_after = 0
if allowed == 0 then
  local at
  if cur + cost <= quota then
    -- The previous window's weight has to fade enough (prev > 0 here).
    at = start + first_tick(prev, quota - cur - cost) * tick
  else
    -- Only the next window will do, once this window's count, then its
    -- previous one, has faded enough.
    at = start + window + first_tick(cur, quota - cost) * tick
  end
  retry_after = at - now
end
local reset_after = 0
if cur > 0 then
  reset_after = start + 2 * window - now
elseif estimate > 0 then
  reset_after = start + window - now
end
local remaining = 0
if estimate < quota then remaining = quota - estimate end
return {allowed, remaining, retry_after, reset_after, now}
