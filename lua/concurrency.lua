-- concurrency.lua: leases on a bounded, weighted capacity, atomically.
--
-- An identity holds at most `max` units in flight. Each lease holds `weight`
-- units until it is released, or until its expiry passes: a holder that
-- crashed cannot leak capacity for longer than the lease TTL. Every call
-- first drops the expired leases, so capacity comes back even if nothing is
-- ever released; the keys expire with the last lease.
--
-- Work per call is O(log N) for the sorted set plus O(k) for the k leases it
-- touches: expired leases (each removed once) and, on a denial, the
-- soonest-expiring leases it waits for (k <= weight).
--
-- KEYS[1]  the leases: a sorted set, member "<weight>:<lease id>",
--          score = expiry (µs)
-- KEYS[2]  a hash {n = units held by the leases}, same hash tag
-- ARGV[1]  max: units in flight                          (integer >= 1)
-- ARGV[2]  lease TTL in µs                               (integer >= 1)
-- ARGV[3]  lease id: 1 to 64 lowercase hex digits
-- ARGV[4]  weight                                        (integer, 0 <= weight <= max;
--                                                          >= 1 to acquire)
-- ARGV[5]  op: 0 reports only (Peek), 1 acquires, 2 releases, 3 extends the
--          lease to now + TTL
-- ARGV[6]  now in µs, or 0 to read Redis TIME (anything but 0 is for tests)
--
-- Reply: {ok (0|1), remaining, retry_after µs, reset_after µs, now µs}
-- where ok is: acquired, or held already by this lease id (op 1), released
-- by this call (op 2), still held and extended (op 3), or would acquire
-- (op 0).
-- MAX, int_arg and clock come from prelude.lua, which the lua package
-- puts before this script.

local max = int_arg(1, 1, MAX)
local ttl = int_arg(2, 1, MAX / 4)
local id = ARGV[3]
local weight = int_arg(4, 0, MAX)
local op = int_arg(5, 0, 3)
local now = int_arg(6, 0, MAX)
if not (max and ttl and weight and op and now) or type(id) ~= 'string' or
    #id < 1 or #id > 64 or not string.match(id, '^[0-9a-f]+$') then
  return redis.error_reply('ERR ratelimit: concurrency: invalid argument')
end
if weight > max or (op == 1 and weight < 1) then
  return redis.error_reply('ERR ratelimit: concurrency: weight out of range')
end
now = clock(now)

local LEASES, META = KEYS[1], KEYS[2]
local member = string.format('%d:%s', weight, id)

-- weight_of returns the weight of a member, or 0 for one this script did
-- not write.
local function weight_of(m)
  return tonumber(string.match(m, '^(%d+):')) or 0
end

local n = tonumber(redis.call('HGET', META, 'n'))
local entries = redis.call('ZCARD', LEASES)
if entries == 0 then
  n = 0
elseif not n then
  -- The summary is gone but the leases are not (the two keys expired
  -- apart): rebuild it, once.
  n = 0
  for _, m in ipairs(redis.call('ZRANGE', LEASES, 0, -1)) do
    n = n + weight_of(m)
  end
end

-- Leases whose expiry is at or before now are gone: their holders did not
-- release or extend them in time.
local dirty = false
local expired = redis.call('ZRANGEBYSCORE', LEASES, '-inf', now)
for _, m in ipairs(expired) do
  n = n - weight_of(m)
end
if #expired > 0 and op ~= 0 then
  redis.call('ZREMRANGEBYSCORE', LEASES, '-inf', now)
  dirty = true
end
if n < 0 then n = 0 end

local ok = 0
if op == 2 then
  if redis.call('ZREM', LEASES, member) == 1 then
    ok, n, dirty = 1, n - weight, true
  end
elseif op == 3 then
  -- Extending a lease that expired (or was released) fails: its capacity
  -- may already be someone else's.
  if redis.call('ZSCORE', LEASES, member) then
    redis.call('ZADD', LEASES, 'XX', now + ttl, member)
    ok, dirty = 1, true
  end
elseif op == 1 and redis.call('ZSCORE', LEASES, member) then
  -- The lease is held already. Lease ids are 128 random bits, so this is
  -- the same acquire sent again: the client lost the reply of a call Redis
  -- ran (a connection broken in between) and retried it. It was granted:
  -- say so, without taking its weight twice.
  ok = 1
elseif n + weight <= max then
  ok = 1
  if op == 1 then
    redis.call('ZADD', LEASES, now + ttl, member)
    n, dirty = n + weight, true
  end
end
if n < 0 then n = 0 end

local last = 0
local top = redis.call('ZRANGE', LEASES, -1, -1, 'WITHSCORES')
if #top > 0 then last = tonumber(top[2]) end
if dirty then
  if n <= 0 or last <= now then
    n, last = 0, 0
    redis.call('DEL', LEASES, META)
  else
    -- At least 2 ms: Redis 7.0 can delete a key given PEXPIRE 1 at once.
    local ttl_ms = math.max(2, math.ceil((last - now) / 1000))
    redis.call('HSET', META, 'n', n)
    redis.call('PEXPIRE', LEASES, ttl_ms)
    redis.call('PEXPIRE', META, ttl_ms)
  end
end

local retry_after = 0
if ok == 0 and (op == 0 or op == 1) then
  -- Capacity comes back at the latest when the soonest-expiring leases
  -- expire (sooner if they are released). Every lease holds at least 1
  -- unit, so at most `need` leases are read.
  local need = n + weight - max
  local freed = 0
  local soonest = redis.call('ZRANGEBYSCORE', LEASES, string.format('(%d', now), '+inf',
    'WITHSCORES', 'LIMIT', 0, need)
  for i = 1, #soonest, 2 do
    freed = freed + weight_of(soonest[i])
    if freed >= need then
      retry_after = tonumber(soonest[i + 1]) - now
      break
    end
  end
  if retry_after <= 0 then retry_after = ttl end
end
local reset_after = 0
if n > 0 and last > now then reset_after = last - now end
local remaining = 0
if n < max then remaining = max - n end
return {ok, remaining, retry_after, reset_after, now}
