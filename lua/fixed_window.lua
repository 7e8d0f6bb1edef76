-- fixed_window.lua: one fixed-window decision, atomically.
--
-- Windows are aligned to the Unix epoch: window k covers
-- [k*window, (k+1)*window) µs of Redis TIME, the same for every identity and
-- every instance (a daily quota resets at 00:00 UTC). Each window grants
-- `quota` units; a call of cost n takes n of them. A cost of 0 is always
-- allowed.
--
-- KEYS[1]  a hash {s = start of the window counted (µs), p = its length (µs),
--          c = units spent in it}
-- KEYS[2]  refunds only: the refund's own key (see remember in prelude.lua)
-- ARGV[1]  quota: units per window                     (integer >= 1)
-- ARGV[2]  window length in µs                         (integer >= 1)
-- ARGV[3]  unused, 0 (keeps the argument layout of every algorithm)
-- ARGV[4]  cost                                        (integer, 0 <= cost <= quota)
-- ARGV[5]  mode: 1 spends the cost when allowed, 0 only reports (Peek),
--          2 gives cost units back (Refund), never below 0 spent
-- ARGV[6]  now in µs, or 0 to read Redis TIME (anything but 0 is for tests)
-- ARGV[7]  refunds only: when the refunded spend was decided, µs. Only a
--          spend counted in the stored window is given back: one from an
--          earlier window has been forgotten already.
-- ARGV[8]  refunds only: how long to remember the refund's key, ms
--
-- Reply: {allowed (0|1), remaining, retry_after µs, reset_after µs, now µs}
-- MAX, int_arg, clock and remember come from prelude.lua, which the lua
-- package puts before this script.

local quota = int_arg(1, 1, MAX)
local window = int_arg(2, 1, MAX)
local cost = int_arg(4, 0, MAX)
local mode = int_arg(5, 0, 2)
local now = int_arg(6, 0, MAX)
if not (quota and window and int_arg(3, 0, 0) and cost and mode and now) or (mode == 2) ~= (#ARGV == 8) then
  return redis.error_reply('ERR ratelimit: fixed_window: invalid argument')
end
if cost > quota or window > MAX / 4 then
  return redis.error_reply('ERR ratelimit: fixed_window: cost or window out of range')
end
local spent_at, keep = 0, 0
if mode == 2 then
  spent_at, keep = int_arg(7, 0, MAX), int_arg(8, 1, MAX)
  if not (spent_at and keep and #KEYS == 2) then
    return redis.error_reply('ERR ratelimit: fixed_window: invalid refund argument')
  end
end
now = clock(now)

local state = redis.call('HMGET', KEYS[1], 's', 'p', 'c')
local s, p, c = tonumber(state[1]), tonumber(state[2]), tonumber(state[3])
local valid = s and p and c and p >= 1 and c >= 0 and
  s == math.floor(s) and p == math.floor(p) and c == math.floor(c)
-- If TIME went backwards (failover to a node with another clock), count in
-- the window already written rather than in an earlier one.
if valid and s > now then now = s end
local start = now - now % window
local until_end = start + window - now
local spent = 0
if valid and s < start + window and s + p > start then
  -- The stored window overlaps the current one: the same window, or the
  -- limit changed (another Per) and the units spent under the old window
  -- may lie in this one, so they still count.
  spent = c
end
-- Units carried over from a window of another length are moved into the
-- current one by any call but a Peek, a denial included: written with this
-- window's start, length and TTL, they count here and are not forgotten
-- with the old window's shorter TTL.
local write = spent > 0 and p ~= window and mode ~= 0

local allowed = 0
if mode == 2 then
  allowed = 1
  if cost > 0 and remember(KEYS[2], keep) and spent > 0 and spent_at >= s and spent_at < s + p then
    spent = spent - cost
    if spent < 0 then spent = 0 end
    write = true
  end
elseif cost == 0 or spent + cost <= quota then
  allowed = 1
  if mode == 1 and cost > 0 then
    spent = spent + cost
    write = true
  end
end
if write then
  if spent == 0 then
    redis.call('DEL', KEYS[1])
  else
    redis.call('HSET', KEYS[1], 's', start, 'p', window, 'c', spent)
    redis.call('PEXPIRE', KEYS[1], math.ceil(until_end / 1000))
  end
end

local retry_after, reset_after = 0, 0
if allowed == 0 then
  -- The next window starts empty, and cost <= quota always fits it.
  retry_after = until_end
end
if spent > 0 then reset_after = until_end end
local remaining = 0
if spent < quota then remaining = quota - spent end
return {allowed, remaining, retry_after, reset_after, now}
