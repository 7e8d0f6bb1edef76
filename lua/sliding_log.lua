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
-- KEYS[2]  a hash {n = units in the log, s = last seq}, same hash tag
-- ARGV[1]  quota: units per window                      (integer >= 1)
-- ARGV[2]  window length in µs                          (integer >= 1)
-- ARGV[3]  unused, 0 (keeps the argument layout of every algorithm)
-- ARGV[4]  cost                                         (integer, 0 <= cost <= quota)
-- ARGV[5]  mode: 1 spends the cost when allowed, 0 only reports (Peek),
--          2 gives cost units back from the newest entries (Refund)
-- ARGV[6]  now in µs, or 0 to read Redis TIME (anything but 0 is for tests)
--
-- Reply: {allowed (0|1), remaining, retry_after µs, reset_after µs, now µs}
-- MAX, int_arg and clock come from prelude.lua, which the lua package
-- puts before this script.

local quota = int_arg(1, 1, MAX)
local window = int_arg(2, 1, MAX)
local cost = int_arg(4, 0, MAX)
local mode = int_arg(5, 0, 2)
local now = int_arg(6, 0, MAX)
if not (quota and window and int_arg(3, 0, 0) and cost and mode and now) then
  return redis.error_reply('ERR ratelimit: sliding_log: invalid argument')
end
if cost > quota or window > MAX / 4 then
  return redis.error_reply('ERR ratelimit: sliding_log: cost or window out of range')
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

local meta = redis.call('HMGET', META, 'n', 's')
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
local dirty = false
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
  -- Refund from the newest entries: that is where the most recent spend
  -- went. Each step removes or shrinks one entry.
  local back = cost
  while back > 0 and n > 0 do
    local top = redis.call('ZRANGE', LOG, -1, -1, 'WITHSCORES')
    if #top == 0 then break end
    local _, c = parse(top[1])
    redis.call('ZREM', LOG, top[1])
    if c <= back then
      back, n = back - c, n - c
    else
      seq = seq + 1
      redis.call('ZADD', LOG, tonumber(top[2]), string.format('%d:%d', seq, c - back))
      n, back = n - back, 0
    end
    dirty = true
  end
  if n < 0 then n = 0 end
elseif n + cost <= quota then
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
    redis.call('HSET', META, 'n', n, 's', seq)
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
