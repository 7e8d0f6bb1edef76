-- prelude.lua: what every script starts with. The lua package puts this
-- file before each script, so that argument checking and the clock are
-- written once; Redis sees one self-contained script per algorithm.

-- MAX is the largest integer a Lua double holds exactly, 2^53 - 1: every
-- quantity a script stores or returns stays below it.
local MAX = 9007199254740991

-- int_arg accepts only plain decimal digits (what the Go side sends): no
-- sign, exponent, hex, spaces, inf or nan, and at most 16 digits.
local function int_arg(i, min, max)
  local s = ARGV[i]
  if type(s) ~= 'string' or #s > 16 or not string.find(s, '^%d+$') then
    return nil
  end
  local v = tonumber(s)
  if v < min or v > max then
    return nil
  end
  return v
end

-- clock returns now, or Redis TIME in microseconds when now is 0. A non-zero
-- now comes only from tests, which move time by hand.
local function clock(now)
  if now ~= 0 then
    return now
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- remember records a refund's own key for ms milliseconds, and reports
-- whether it was new. A refund sent twice (its reply lost, and the client
-- resending the call on a new connection, as go-redis does) finds its key
-- the second time and gives nothing back again.
local function remember(key, ms)
  return redis.call('SET', key, '1', 'NX', 'PX', ms) ~= false
end
