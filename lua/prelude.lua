-- prelude.lua: what every script starts with. The lua package puts this
-- file before each script, so that argument checking and the clock are
-- written once; Redis sees one self-contained script.

-- MAX is the largest integer a Lua double holds exactly, 2^53 - 1: every
-- quantity a script stores or returns stays below it.
local MAX = 9007199254740991

-- Library functions as locals: a global lookup costs two table lookups,
-- and a script with many decisions calls these for each.
local call, find, match, format, tonumber, type = redis.call, string.find, string.match, string.format, tonumber, type
local floor, ceil, min, max = math.floor, math.ceil, math.min, math.max

-- parsed holds the arguments checked so far, by their text (Lua interns
-- strings): the decisions of one call mostly repeat their limits, so each
-- distinct argument is checked once.
local parsed = {}

-- int_arg accepts only plain decimal digits (what the Go side sends): no
-- sign, exponent, hex, spaces, inf or nan, and at most 16 digits, between
-- lo and hi.
local function int_arg(i, lo, hi)
  local s = ARGV[i]
  if s == nil then return nil end
  local v = parsed[s]
  if v == nil then
    v = type(s) == 'string' and #s <= 16 and find(s, '^%d+$') ~= nil and tonumber(s)
    parsed[s] = v
  end
  if not v or v < lo or v > hi then return nil end
  return v
end

-- clock returns now, or Redis TIME in microseconds when now is 0. A non-zero
-- now comes only from tests, which move time by hand.
local function clock(now)
  if now ~= 0 then
    return now
  end
  local t = call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- remember records a refund's own key for ms milliseconds, and reports
-- whether it was new. A refund sent twice (its reply lost, and the client
-- resending the call on a new connection, as go-redis does) finds its key
-- the second time and gives nothing back again.
local function remember(key, ms)
  return call('SET', key, '1', 'NX', 'PX', ms) ~= false
end
