-- decide.lua: one or more decisions, each atomic, in one script call.
--
-- A dispatcher that holds several queued decisions for one Redis node (one
-- slot, on a Cluster) sends them here together: Redis runs one script
-- instead of one per decision, with one TIME, which is where most of a
-- script's cost goes. Each decision is exactly the decision it would be
-- alone, in order: two decisions of one identity in a batch see each
-- other as two calls in a row would.
--
-- ARGV[1]  n, the number of decisions                       (1 to 1024)
-- ARGV[2]  now in µs, or 0 to read Redis TIME (anything but 0 is for tests)
-- then per decision, in order:
--          algorithm (1 token bucket, 2 sliding window, 3 sliding log,
--          4 fixed window; see algorithms.lua), its three limit
--          parameters a, b, c, cost (0 <= cost <= the limit's capacity),
--          mode (0 reports only: Peek; 1 spends the cost when allowed;
--          2 gives the cost back: Refund), and for a refund two more: when
--          the refunded spend was decided (µs), and how long to remember
--          the refund's key (ms)
-- KEYS     per decision, in order: its algorithm's keys (the sliding log
--          has two), then, for a refund, the refund's own key (see remember
--          in prelude.lua). A decision's keys share one hash tag; on a
--          Cluster all keys of a call share one slot.
--
-- Reply: five integers per decision, in order: {allowed (0|1), remaining,
-- retry_after µs, reset_after µs, now µs}. A refund is always "allowed".
-- A cost of 0 is always allowed and spends nothing.
--
-- Errors: a call of one decision fails with the error itself (an invalid
-- argument, WRONGTYPE...). In a call of several, a decision that fails is
-- answered {-1, 0, 0, 0, 0} and the others are decided all the same; the
-- Go side sends it again alone to learn its error.
-- MAX, int_arg, clock and remember come from prelude.lua, the algorithms
-- from algorithms.lua: the lua package puts both before this script.

local n = int_arg(1, 1, 1024)
local now = int_arg(2, 0, MAX)
if not (n and now) then
  return redis.error_reply('ERR ratelimit: decide: invalid argument')
end
now = clock(now)

local nargv, nkeys = #ARGV, #KEYS

-- The limit of the previous decision, checked: the decisions of one call
-- mostly share their limit, whose strings Lua interns, so comparing them
-- is cheap and checking them again is not.
local last_id, last_a, last_b, last_c
local A, a, b, c, capacity

-- decide runs the decision whose arguments start at ARGV[i] and keys at
-- KEYS[k], of algorithm id and mode md, which end before ARGV[ni] and
-- KEYS[nk], and returns its five reply integers, or nil and the error for
-- invalid arguments.
local function decide(i, k, id, md, ni, nk)
  local sa, sb, sc = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if id ~= last_id or sa ~= last_a or sb ~= last_b or sc ~= last_c then
    last_id = nil
    A, a, b, c = algorithm(id), int_arg(i + 1, 1, MAX), int_arg(i + 2, 1, MAX), int_arg(i + 3, 0, MAX)
    if not (a and b and c) or not A.check(a, b, c) then
      return nil, 'ERR ratelimit: decide: invalid argument'
    end
    capacity = A.capacity(a, b, c)
    last_id, last_a, last_b, last_c = id, sa, sb, sc
  end
  local cost = int_arg(i + 4, 0, MAX)
  if not cost or cost > capacity or ni - 1 > nargv or nk - 1 > nkeys then
    return nil, 'ERR ratelimit: decide: invalid argument'
  end
  local spent_at, keep = 0, 0
  if md == 2 then
    spent_at, keep = int_arg(i + 6, 0, MAX), int_arg(i + 7, 1, MAX)
    if not (spent_at and keep) then
      return nil, 'ERR ratelimit: decide: invalid refund argument'
    end
  end

  local st = A.load(KEYS, k, a, b, c, now, md)
  local ok, write = true, st.stale and md ~= 0
  if md == 2 then
    if cost > 0 and remember(KEYS[nk - 1], keep) and A.refund(st, cost, spent_at) then write = true end
  else
    ok = cost == 0 or A.fits(st, cost)
    if ok and md == 1 and cost > 0 then
      A.spend(st, cost)
      write = true
    end
  end
  if write then A.write(st) end
  local remaining, retry, reset = A.report(st, cost, ok)
  if ok then return 1, remaining, retry, reset, st.now end
  return 0, remaining, retry, reset, st.now
end

-- Walk the decisions. The algorithm and mode of each say where the next
-- one starts; a decision whose algorithm or mode is invalid cannot say
-- that, and the rest of the call fails with it. In a call of several, each
-- decision runs in a protected call, so that one that fails (a foreign
-- value at its key) fails alone.
local reply, i, k = {}, 3, 1
for d = 1, n do
  local base = 5 * (d - 1)
  local id, md = int_arg(i, 1, 4), int_arg(i + 5, 0, 2)
  local ni, nk
  if id and md then
    ni, nk = i + 6, k + KEYS_OF[id]
    if md == 2 then ni, nk = i + 8, nk + 1 end
  end
  if n == 1 then
    if not ni or ni - 1 ~= nargv or nk - 1 ~= nkeys then
      return redis.error_reply('ERR ratelimit: decide: invalid argument')
    end
    local allowed, remaining, retry, reset, at = decide(i, k, id, md, ni, nk)
    if not allowed then return redis.error_reply(remaining) end
    return {allowed, remaining, retry, reset, at}
  end
  local done, allowed, remaining, retry, reset, at = false
  if ni then
    done, allowed, remaining, retry, reset, at = pcall(decide, i, k, id, md, ni, nk)
  end
  if done and allowed then
    reply[base + 1], reply[base + 2], reply[base + 3], reply[base + 4], reply[base + 5] = allowed, remaining, retry, reset, at
  else
    reply[base + 1], reply[base + 2], reply[base + 3], reply[base + 4], reply[base + 5] = -1, 0, 0, 0, 0
  end
  if not ni then
    for rest = d + 1, n do
      local r = 5 * (rest - 1)
      reply[r + 1], reply[r + 2], reply[r + 3], reply[r + 4], reply[r + 5] = -1, 0, 0, 0, 0
    end
    return reply
  end
  i, k = ni, nk
end
if i - 1 ~= nargv or k - 1 ~= nkeys then
  return redis.error_reply('ERR ratelimit: decide: invalid argument')
end
return reply
