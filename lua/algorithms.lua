-- algorithms.lua: the counting algorithms, each as the same five steps on a
-- state table, so that one decision (decide.lua) and an all-or-nothing
-- decision over several quotas (multi.lua) count exactly alike:
--
--   st = A.load(keys, k, a, b, c, now, mode)  read the state (a Peek, mode 0,
--                                              writes nothing, not even here)
--   A.fits(st, cost)                           would cost fit now?
--   A.spend(st, cost)                          take it
--   A.refund(st, cost, at)                     give back to the spend decided
--                                              at `at`; true if anything changed
--   A.write(st)                                store the state, with its TTL
--   A.report(st, cost, fits)                   remaining, retry_after, reset_after
--
-- st.now is the decision's time (moved forward to a stored time when TIME
-- went backwards: a failover to a node with another clock); st.born is when
-- the stored state began (a refund of a spend older than that, one a Reset
-- or an expiry forgot, gives nothing back); st.stale says
-- that a call other than a Peek must write the state even if it spends
-- nothing: after a change of limit its TTL would no longer cover what the
-- new limit needs, or (sliding log) expired entries were dropped.
--
-- The three limit parameters a, b, c are those the Go side prepares (see
-- policy in algorithm.go); A.check validates them, A.capacity is the most
-- one call may cost under them. keys
-- holds the decision's keys from index k: one for every algorithm but the
-- sliding log (two: the log and its summary, one hash tag).
--
-- Every quantity is an integer below 2^53, exact in a Lua double; no float
-- is stored or returned.

-- MIN_TTL is the least TTL a script sets, in ms: Redis 7.0 can delete a key
-- given PEXPIRE 1 as soon as its millisecond ticks.
local MIN_TTL = 2

-- pack and unpack (bound in prelude.lua) are Redis's struct library,
-- which an embedded stand-in (miniredis) may lack: the token bucket then
-- keeps its state as text. Packed, reading and writing it costs a few
-- hundred instructions; as text (a pattern match, four tonumber, a
-- format), about five times that.

-- Shared by the windows: is_int reports whether v is a whole number (a
-- field read back from a hash); a quota is the most one call may cost.
local function is_int(v) return v ~= nil and v == floor(v) end
local function quota_capacity(quota) return quota end
local function window_check(quota, window, zero) return zero == 0 and window <= MAX / 4 end

-- Each algorithm is made by a function called on its first use in a
-- script call: Redis runs a script's whole text on every call, and making
-- the closures of all four up front cost about 58,000 redis-server
-- instructions per call (callgrind), a third of a lone token-bucket
-- decision; made on use, that decision costs about 147,000 instead of
-- 176,000. The functions library (lua.Library) keeps what it made across
-- calls: it makes each algorithm once after FUNCTION LOAD.

-- Token bucket: a = rate (units per µs), b = per (units per token), c =
-- burst (tokens). The Go side reduces rate/per by their gcd. State: one
-- string (one SET with PX: cheaper for Redis than a hash and its separate
-- PEXPIRE) holding level, last update (µs), per, expiry (µs) and birth
-- (µs): a zero byte and five packed doubles (exact below 2^53), or without
-- the struct library the text "<level>:<last>:<per>:<expiry>:<born>"
-- (earlier versions wrote the first three or four). The stored expiry is when the key's TTL ends:
-- under an unchanged limit it always covers the refill; after a longer
-- period or a larger burst, st.stale.
local function token_bucket()
  local TB = {}
  function TB.check(rate, per, burst) return burst >= 1 and burst <= MAX / per end
  function TB.capacity(rate, per, burst) return burst end
  function TB.load(keys, k, rate, per, burst, now)
    local cap = burst * per
    local st = {key = keys[k], rate = rate, per = per, cap = cap, level = cap, now = now, born = now, stale = false}
    local raw = call('GET', st.key)
    if not raw then return st end
    local level, last, p, expiry, born
    if unpack and #raw == 41 and raw:byte(1) == 0 then
      local _
      _, level, last, p, expiry, born = unpack('<Bddddd', raw)
    else
      local a, b, c, d, e = match(raw, '^(%d+):(%d+):(%d+):?(%d*):?(%d*)$')
      level, last, p, expiry, born = tonumber(a), tonumber(b), tonumber(c), tonumber(d), tonumber(e)
    end
    if not (level and last and p and p >= 1) then return st end
    st.born = born or 0
    if p ~= per then
      -- The limit changed since this state was written: keep the tokens.
      -- This is the only place a division may round.
      level = floor(level / p * per)
    end
    if level > cap then level = cap end
    if level < 0 then level = 0 end
    if now > last then
      -- Cap the elapsed time at what refills the bucket, so that elapsed *
      -- rate cannot leave the exact range of a double.
      if now - last >= ceil((cap - level) / rate) then
        level = cap
      else
        level = level + (now - last) * rate
      end
    elseif last > now then
      -- TIME went backwards: no refill until it passes the stored time.
      st.now = last
    end
    st.level = level
    st.stale = level < cap and st.now + (cap - level) / rate > (expiry or 0)
    return st
  end
  function TB.fits(st, cost) return st.level >= cost * st.per end
  function TB.spend(st, cost) st.level = st.level - cost * st.per end
  function TB.refund(st, cost, at)
    if st.level >= st.cap or at < st.born then return false end
    st.level = min(st.cap, st.level + cost * st.per)
    return true
  end
  function TB.write(st)
    -- A full bucket is the same as no state at all.
    if st.level >= st.cap then
      call('DEL', st.key)
      return
    end
    local ms = max(1, ceil((st.cap - st.level) / st.rate / 1000))
    local v
    if pack then
      v = pack('<Bddddd', 0, st.level, st.now, st.per, st.now + ms * 1000, st.born)
    else
      v = format('%d:%d:%d:%d:%d', st.level, st.now, st.per, st.now + ms * 1000, st.born)
    end
    call('SET', st.key, v, 'PX', ms)
  end
  function TB.report(st, cost, fits)
    local retry = 0
    if not fits then retry = ceil((cost * st.per - st.level) / st.rate) end
    return floor(st.level / st.per), retry, ceil((st.cap - st.level) / st.rate)
  end
  return TB
end


-- Sliding window: a = quota, b = window in ticks, c = tick (µs; 1 unless the
-- window is so long that quota * ticks could pass 2^53). The counter
-- approximation: units are counted in windows aligned to the Unix epoch,
-- and the usage of the window sliding over [now - window, now] is
--   ceil(previous * (ticks - elapsed ticks) / ticks) + current,
-- the previous window's count assumed spread evenly over it. State: a hash
-- {s = start of the current window, c = its count, q = the previous
-- window's count, p = window length (µs), b = birth (µs)}.
local function sliding_window()
  local SW = {}
  function SW.check(quota, ticks, tick) return tick >= 1 and ticks <= MAX / quota and ticks <= MAX / 4 / tick end
  SW.capacity = quota_capacity
  function SW.load(keys, k, quota, ticks, tick, now)
    local window = ticks * tick
    local st = {key = keys[k], quota = quota, ticks = ticks, tick = tick, window = window, cur = 0, prev = 0, born = now, stale = false}
    local h = call('HMGET', st.key, 's', 'c', 'q', 'p', 'b')
    local s, c, q, p = tonumber(h[1]), tonumber(h[2]), tonumber(h[3]), tonumber(h[4])
    local valid = is_int(s) and is_int(c) and is_int(q) and is_int(p) and p >= 1 and c >= 0 and q >= 0
    if valid then st.born = tonumber(h[5]) or 0 end
    -- TIME went backwards: count in the window already written.
    if valid and s > now then now = s end
    local start = now - now % window
    if valid then
      if p ~= window then
        -- The limit changed (another Per): carry the old estimate over as
        -- units spent in the current window, so that no recent use is
        -- forgotten, and rewrite it there (st.stale). The only place a
        -- product may leave the exact range; it is rounded up.
        local ostart = now - now % p
        if s == ostart then
          st.cur = ceil(q * (p - (now - s)) / p) + c
        elseif s == ostart - p then
          st.cur = ceil(c * (p - (now - ostart)) / p)
        end
        st.stale = st.cur > 0
      elseif s == start then
        st.cur, st.prev = c, q
      elseif s == start - window then
        st.prev = c
      end
    end
    -- After a lower quota (a downgrade) more may have been spent than the
    -- new quota: count it as the whole quota, which keeps products exact.
    st.cur, st.prev = min(st.cur, quota), min(st.prev, quota)
    st.now, st.start, st.elapsed = now, start, floor((now - start) / tick)
    return st
  end
  -- weighted is the previous window's count as it weighs now.
  local function weighted(st) return ceil(st.prev * (st.ticks - st.elapsed) / st.ticks) end
  function SW.fits(st, cost) return weighted(st) + st.cur + cost <= st.quota end
  function SW.spend(st, cost) st.cur = st.cur + cost end
  function SW.refund(st, cost, at)
    -- Back to the window the spend was counted in, if it is still counted.
    if at < st.born then return false end
    if at >= st.start and at < st.start + st.window and st.cur > 0 then
      st.cur = max(st.cur - cost, 0)
      return true
    elseif at >= st.start - st.window and at < st.start and st.prev > 0 then
      st.prev = max(st.prev - cost, 0)
      return true
    end
    return false
  end
  function SW.write(st)
    if st.cur + st.prev == 0 then
      call('DEL', st.key)
      return
    end
    call('HSET', st.key, 's', st.start, 'c', st.cur, 'q', st.prev, 'p', st.window, 'b', st.born)
    call('PEXPIRE', st.key, max(MIN_TTL, ceil((st.start + 2 * st.window - st.now) / 1000)))
  end
  -- first_tick returns the first tick of a window at which n, weighted,
  -- leaves room (>= 0): ticks when only the next window will do.
  local function first_tick(st, n, room)
    if n == 0 then return 0 end
    local k = floor(room * st.ticks / n)
    if k >= st.ticks then return 0 end
    return st.ticks - k
  end
  function SW.report(st, cost, fits)
    local estimate = weighted(st) + st.cur
    local retry = 0
    if not fits then
      local at
      if st.cur + cost <= st.quota then
        -- The previous window's weight has to fade enough (prev > 0 here).
        at = st.start + first_tick(st, st.prev, st.quota - st.cur - cost) * st.tick
      else
        -- Only the next window will do, once this window's count has faded.
        at = st.start + st.window + first_tick(st, st.cur, st.quota - cost) * st.tick
      end
      retry = at - st.now
    end
    local reset = 0
    if st.cur > 0 then
      reset = st.start + 2 * st.window - st.now
    elseif estimate > 0 then
      reset = st.start + st.window - st.now
    end
    return max(st.quota - estimate, 0), retry, reset
  end
  return SW
end

-- Fixed window: a = quota, b = window (µs), c = 0. Windows are aligned to
-- the Unix epoch: window k covers [k*window, (k+1)*window) of Redis TIME,
-- the same for every identity and instance (a daily quota resets at 00:00
-- UTC). State: a hash {s = start of the window counted, p = its length,
-- c = units spent in it, b = birth (µs)}.
local function fixed_window()
  local FW = {}
  FW.check, FW.capacity = window_check, quota_capacity
  function FW.load(keys, k, quota, window, zero, now)
    local st = {key = keys[k], quota = quota, window = window, spent = 0, born = now, stale = false}
    local h = call('HMGET', st.key, 's', 'p', 'c', 'b')
    local s, p, c = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
    local valid = is_int(s) and is_int(p) and is_int(c) and p >= 1 and c >= 0
    if valid then st.born = tonumber(h[4]) or 0 end
    if valid and s > now then now = s end
    local start = now - now % window
    if valid and s < start + window and s + p > start then
      -- The stored window overlaps the current one: the same window, or the
      -- limit changed (another Per) and units spent under the old window may
      -- lie in this one, so they still count. Carried over, they move into
      -- this window (st.stale), with its TTL.
      st.spent, st.s, st.p = c, s, p
      st.stale = p ~= window and c > 0
    end
    st.now, st.start = now, start
    return st
  end
  function FW.fits(st, cost) return st.spent + cost <= st.quota end
  function FW.spend(st, cost) st.spent = st.spent + cost end
  function FW.refund(st, cost, at)
    -- Only a spend counted in the stored window comes back: one of an
    -- earlier window is forgotten already.
    if st.spent == 0 or at < st.s or at >= st.s + st.p or at < st.born then return false end
    st.spent = max(st.spent - cost, 0)
    return true
  end
  function FW.write(st)
    if st.spent == 0 then
      call('DEL', st.key)
      return
    end
    call('HSET', st.key, 's', st.start, 'p', st.window, 'c', st.spent, 'b', st.born)
    call('PEXPIRE', st.key, max(MIN_TTL, ceil((st.start + st.window - st.now) / 1000)))
  end
  function FW.report(st, cost, fits)
    local until_end = st.start + st.window - st.now
    local retry, reset = 0, 0
    -- The next window starts empty, and cost <= quota always fits it.
    if not fits then retry = until_end end
    if st.spent > 0 then reset = until_end end
    return max(st.quota - st.spent, 0), retry, reset
  end
  return FW
end

-- Sliding log: a = quota, b = window (µs), c = 0. Every allowed spend is
-- logged with its time: a sorted set, member "<seq>:<cost>", score = time,
-- and a summary hash {n = units in the log, s = last seq, w = the window the
-- TTLs were set for, b = birth (µs)}, under the same hash tag. Exact in every window of
-- length Per; O(log N) per call plus the entries a call touches (expired
-- ones, each removed once; on a denial at most `cost` of the oldest).
local function sliding_log()
  local SL = {}
  SL.check, SL.capacity = window_check, quota_capacity
  -- parse returns the seq and cost of a log member, 0, 0 for a foreign one.
  local function parse(m)
    local seq, c = match(m, '^(%d+):(%d+)$')
    if not seq then return 0, 0 end
    return tonumber(seq), tonumber(c)
  end
  function SL.load(keys, k, quota, window, zero, now, mode)
    local st = {log = keys[k], meta = keys[k + 1], quota = quota, window = window, stale = false, newest = 0, born = now}
    local m = call('HMGET', st.meta, 'n', 's', 'w', 'b')
    local n, seq = tonumber(m[1]), tonumber(m[2])
    local entries = call('ZCARD', st.log)
    if entries == 0 then
      n, seq = 0, seq or 0
    elseif not (n and seq) then
      -- The summary is gone but the log is not (the two expired apart):
      -- rebuild it, once, from the log.
      n, seq = 0, 0
      for _, e in ipairs(call('ZRANGE', st.log, 0, -1)) do
        local sq, c = parse(e)
        n, seq = n + c, max(seq, sq)
      end
    end
    if entries > 0 then
      st.born = tonumber(m[4]) or 0
      st.newest = tonumber(call('ZRANGE', st.log, -1, -1, 'WITHSCORES')[2])
      -- TIME went backwards: treat the newest entry's time as now.
      if st.newest > now then now = st.newest end
      -- The TTLs were set for another window (the limit changed).
      st.stale = mode ~= 0 and tonumber(m[3]) ~= window
    end
    -- Entries at or before now - window no longer count; a call other than
    -- a Peek drops them.
    local cutoff = now - window
    local expired = call('ZRANGEBYSCORE', st.log, '-inf', cutoff)
    for _, e in ipairs(expired) do
      local _, c = parse(e)
      n = n - c
    end
    if #expired > 0 and mode ~= 0 then
      call('ZREMRANGEBYSCORE', st.log, '-inf', cutoff)
      st.stale = true
    end
    st.n, st.seq, st.now, st.cutoff = max(n, 0), seq, now, cutoff
    return st
  end
  function SL.fits(st, cost) return st.n + cost <= st.quota end
  function SL.spend(st, cost)
    st.seq = st.seq + 1
    call('ZADD', st.log, st.now, format('%d:%d', st.seq, cost))
    st.n, st.newest = st.n + cost, st.now
  end
  function SL.refund(st, cost, at)
    if at <= st.cutoff or at < st.born then return false end
    -- The entries of the refunded spend: those logged at its time (several
    -- calls may share a microsecond; the newest first). Each step removes or
    -- shrinks one entry.
    local at_entries = call('ZRANGEBYSCORE', st.log, at, at)
    table.sort(at_entries, function(x, y) return parse(x) > parse(y) end)
    local back, changed = cost, false
    for _, e in ipairs(at_entries) do
      if back == 0 then break end
      local _, c = parse(e)
      call('ZREM', st.log, e)
      if c <= back then
        back, st.n = back - c, st.n - c
      else
        st.seq = st.seq + 1
        call('ZADD', st.log, at, format('%d:%d', st.seq, c - back))
        st.n, back = st.n - back, 0
      end
      changed = true
    end
    if changed then
      st.n = max(st.n, 0)
      local top = call('ZRANGE', st.log, -1, -1, 'WITHSCORES')
      st.newest = tonumber(top[2]) or 0
    end
    return changed
  end
  function SL.write(st)
    if st.n <= 0 or st.newest == 0 then
      st.n, st.newest = 0, 0
      call('DEL', st.log, st.meta)
      return
    end
    local ttl = max(MIN_TTL, ceil((st.newest + st.window - st.now) / 1000))
    call('HSET', st.meta, 'n', st.n, 's', st.seq, 'w', st.window, 'b', st.born)
    call('PEXPIRE', st.log, ttl)
    call('PEXPIRE', st.meta, ttl)
  end
  function SL.report(st, cost, fits)
    local retry = 0
    if not fits then
      -- Wait for the oldest entries to expire until the cost fits. Every
      -- entry holds at least 1 unit, so at most `need` entries are read. (A
      -- Peek has not dropped expired entries: skip them. string.format, not
      -- tostring, which would print a µs time with 14 significant digits.)
      local need, freed = st.n + cost - st.quota, 0
      local oldest = call('ZRANGEBYSCORE', st.log, format('(%d', st.cutoff), '+inf',
        'WITHSCORES', 'LIMIT', 0, need)
      for i = 1, #oldest, 2 do
        local _, c = parse(oldest[i])
        freed = freed + c
        if freed >= need then
          retry = tonumber(oldest[i + 1]) + st.window - st.now
          break
        end
      end
      if retry <= 0 then retry = st.window end
    end
    local reset = 0
    if st.n > 0 and st.newest > 0 then reset = st.newest + st.window - st.now end
    return max(st.quota - st.n, 0), retry, reset
  end
  return SL
end

-- algorithm returns the algorithm of an id the Go side sends (pinned in
-- algorithm.go, never Go's iota order), built on its first use in the
-- call, and KEYS_OF how many keys each takes.
local MAKE = {token_bucket, sliding_window, sliding_log, fixed_window}
local KEYS_OF = {1, 1, 2, 1}
local built = {}
local function algorithm(id)
  local A = built[id]
  if not A then
    A = MAKE[id]()
    built[id] = A
  end
  return A
end
