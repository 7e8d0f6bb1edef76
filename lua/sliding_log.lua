-- sliding_log.lua: one exact sliding-window decision, atomically.
--
-- Every allowed spend is logged with its time; a call of cost n is allowed
-- when the units logged in (now - window, now] plus n fit the quota. Exact,
-- at the price of memory: at most `quota` entries per identity (one per
-- allowed call; fewer when calls cost more than 1).
--
-- Work per call is O(log N) for the sorted set plus O(k) for the k entries
-- the call touches: entries that expired (each is removed once, so this is
-- amortised O(1)), and on a denial the oldest entries whose expiry it waits
-- for (k <= cost).
--
-- KEYS[1]  the log: a sorted set, member "<seq>:<cost>", score = time (µs)
-- KEYS[2]  a hash {n = units in the log, s = last seq, w = the window the
--          TTLs were set for}, same hash tag
-- KEYS[3]  refunds only: the refund's own key (see remember in prelude.lua)
-- ARGV[1]  quota: units per window                      (integer >= 1)
-- ARGV[2]  window length in µs                          (integer >= 1)
-- ARGV[3]  unused, 0 (keeps the argument layout of every algorithm)
-- ARGV[4]  cost                                         (integer, 0 <= cost <= quota)
-- ARGV[5]  mode: 1 spends the cost when allowed, 0 only reports (Peek),
--          2 gives cost units back (Refund)
-- ARGV[6]  now in µs, or 0 to read Redis TIME (anything but 0 is for tests)
-- ARGV[7]  refunds only: when the refunded spend was decided, µs: the units
--          come off the entries logged at that time (none once they left
--          the window), never off another spend's
-- ARGV[8]  refunds only: how long to remember the refund's key, ms
--
-- A cost of 0 is always allowed. After a change to a longer window, any
-- call but a Peek (a denial included) extends the TTLs to cover it.
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
  return redis.error_reply('ERR ratelimit: sliding_log: invalid argument')
end
if cost > quota or window > MAX / 4 then
  return redis.error_reply('ERR ratelimit: sliding_log: cost or window out of range')
end
local spent_at, keep = 0, 0
if mode == 2 then
  spent_at, keep = int_arg(7, 0, MAX), int_arg(8, 1, MAX)
  if not (spent_at and keep and #KEYS == 3) then
    return redis.error_reply('ERR ratelimit: sliding_log: invalid refund argument')
  end
end
now = clock(now)

local LOG, META = KEYS[1], KEYS[2]

-- parse returns the seq and cost of a log member, or 0, 0 for a member this
-- script did not write.
local function parse(m)
  local seq, c = string.match(m, '^(%d+):(%d+)$')
  if not seq then return 0, 0 end
  return tonumber(seq), tonumber(c)
end

local meta = redis.call('HMGET', META, 'n', 's', 'w')
local n, seq = tonumber(meta[1]), tonumber(meta[2])
local entries = redis.call('ZCARD', LOG)
if entries == 0 then
  -- An empty log holds nothing, whatever the summary says.
  n = 0
  if not seq then seq = 0 end
elseif not (n and seq) then
  -- The summary is gone but the log is not (the two keys expired apart):
  -- rebuild it, once, from the log.
  n, seq = 0, 0
  for _, m in ipairs(redis.call('ZRANGE', LOG, 0, -1)) do
    local sq, c = parse(m)
    n = n + c
    if sq > seq then seq = sq end
  end
end

local newest = 0
if entries > 0 then
  newest = tonumber(redis.call('ZRANGE', LOG, -1, -1, 'WITHSCORES')[2])
  -- If TIME went backwards (failover to a node with another clock), treat
  -- the newest entry's time as now.
  if newest > now then now = newest end
end

-- Entries at or before now - window no longer count.
local cutoff = now - window
-- The TTLs were set for another window (the limit changed): rewrite them
-- for this one.
local dirty = entries > 0 and mode ~= 0 and tonumber(meta[3]) ~= window
local expired = redis.call('ZRANGEBYSCORE', LOG, '-inf', cutoff)
for _, m in ipairs(expired) do
  local _, c = parse(m)
  n = n - c
end
if #expired > 0 and mode ~= 0 then
  redis.call('ZREMRANGEBYSCORE', LOG, '-inf', cutoff)
  dirty = true
end
if n < 0 then n = 0 end

local allowed = 0
local added = false
if mode == 2 then
  allowed = 1
  if cost > 0 and remember(KEYS[3], keep) and spent_at > cutoff then
    -- Refund from the entries of the refunded spend: those logged at its
    -- time (several calls may share a microsecond; the newest first). Each
    -- step removes or shrinks one entry.
    local at = redis.call('ZRANGEBYSCORE', LOG, spent_at, spent_at)
    table.sort(at, function(x, y) return parse(x) > parse(y) end)
    local back = cost
    for _, m in ipairs(at) do
      if back == 0 then break end
      local _, c = parse(m)
      redis.call('ZREM', LOG, m)
      if c <= back then
        back, n = back - c, n - c
      else
        seq = seq + 1
        redis.call('ZADD', LOG, spent_at, string.format('%d:%d', seq, c - back))
        n, back = n - back, 0
      end
      dirty = true
    end
    if n < 0 then n = 0 end
  end
elseif cost == 0 or n + cost <= quota then
  allowed = 1
  if mode == 1 and cost > 0 then
    seq = seq + 1
    redis.call('ZADD', LOG, now, string.format('%d:%d', seq, cost))
    n = n + cost
    dirty, added = true, true
  end
end

if dirty then
  -- The newest entry is the one just added (now is never before it), or
  -- else has to be looked up.
  local top = {}
  if added then
    top = {'', now}
  else
    top = redis.call('ZRANGE', LOG, -1, -1, 'WITHSCORES')
  end
  if n <= 0 or #top == 0 then
    n, newest = 0, 0
    redis.call('DEL', LOG, META)
  else
    newest = tonumber(top[2])
    local ttl = math.ceil((newest + window - now) / 1000)
    redis.call('HSET', META, 'n', n, 's', seq, 'w', window)
    redis.call('PEXPIRE', LOG, ttl)
    redis.call('PEXPIRE', META, ttl)
  end
end

local retry_after = 0
if allowed == 0 then
  -- Wait for the oldest entries to expire until the cost fits. Every entry
  -- holds at least 1 unit, so at most `need` entries are read.
  local need = n + cost - quota
  local freed = 0
  -- (A Peek has not removed expired entries: skip them. string.format, not
  -- tostring, which would print a µs time with 14 significant digits.)
  local oldest = redis.call('ZRANGEBYSCORE', LOG, string.format('(%d', cutoff), '+inf',
    'WITHSCORES', 'LIMIT', 0, need)
  for i = 1, #oldest, 2 do
    local _, c = parse(oldest[i])
    freed = freed + c
    if freed >= need then
      retry_after = tonumber(oldest[i + 1]) + window - now
      break
    end
  end
  if retry_after <= 0 then retry_after = window end
end
local reset_after = 0
if n > 0 and newest > 0 then reset_after = newest + window - now end
local remaining = 0
if n < quota then remaining = quota - n end
return {allowed, remaining, retry_after, reset_after, now}
