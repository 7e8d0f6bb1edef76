-- prelude.lua: what every script starts with. The lua package puts this
-- file before each script, so that argument checking and the clock are
-- written once; Redis sees one self-contained script.

-- MAX is the largest integer a Lua double holds exactly, 2^53 - 1: every
-- quantity a script stores or returns stays below it.
local MAX = 9007199254740991

-- Library functions as locals: a global lookup costs two table lookups,
-- and a script with many decisions calls these for each. bind sets them,
-- not this top level: the functions library (lua.Library) runs its top
-- level once, at FUNCTION LOAD, where Redis offers nothing but
-- redis.register_function (not even string or math), so the library binds
-- them at its first call; a script binds them at once.
--
-- pack and unpack are Redis's struct library, which every Redis has and an
-- embedded stand-in (miniredis) may not: the token bucket then keeps its
-- state as text (see algorithms.lua).
local call, find, match, format, tonumber, type
local floor, ceil, min, max
local pack, unpack

local function bind()
  -- _G's: tonumber and type name the locals here.
  call, find, match, format, tonumber, type = redis.call, string.find, string.match, string.format, _G.tonumber, _G.type
  floor, ceil, min, max = math.floor, math.ceil, math.min, math.max
  local struct = rawget(_G, 'struct')
  if struct then pack, unpack = struct.pack, struct.unpack end
end

-- parsed holds the valid arguments checked so far, by their text (Lua
-- interns strings): the decisions of one call mostly repeat their limits,
-- so each distinct argument is checked once. A script starts every call
-- with an empty one; the functions library (lua.Library) keeps it across
-- calls, which repeat their limits too (a lone token-bucket decision costs
-- 13,000 fewer instructions, about 12%), and starts a new one when it
-- holds more than 1024 (nparsed). Only valid arguments are kept, each at
-- most 16 digits: a hostile argument is not remembered.
local parsed, nparsed = {}, 0

-- int_arg accepts only plain decimal digits (what the Go side sends): no
-- sign, exponent, hex, spaces, inf or nan, and at most 16 digits, between
-- lo and hi.
local function int_arg(i, lo, hi)
  local s = ARGV[i]
  if s == nil then return nil end
  local v = parsed[s]
  if v == nil then
    v = type(s) == 'string' and #s <= 16 and find(s, '^%d+$') ~= nil and tonumber(s)
    if not v then return nil end
    parsed[s], nparsed = v, nparsed + 1
  end
  if v < lo or v > hi then return nil end
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
