-- multi.lua: one all-or-nothing decision over several quotas, atomically:
-- every quota is checked first, and the costs are spent only if every
-- quota allows its own. If any quota denies, nothing is spent anywhere.
--
-- Each quota is counted exactly as one decision of its algorithm counts it
-- (algorithms.lua), in two phases: load and check all, then write all. The
-- quotas' keys must share one slot (the identity's hash tag).
--
-- KEYS[i]  the state of quota i (the key of its algorithm)
-- KEYS[n+1] refunds only: the refund's own key (see remember in prelude.lua)
-- ARGV[1]  number of quotas n, = #KEYS (n+1 for a refund)  (1 to 16)
-- ARGV[2]  mode: 1 spends the costs when all allow, 0 only reports (Peek),
--          2 gives every cost back (Refund)
-- ARGV[3]  now in µs, or 0 to read Redis TIME (anything but 0 is for tests)
-- ARGV[4 + 5(i-1) ...] quota i: algorithm (1 token bucket, 2 sliding window,
--          4 fixed window; see algorithms.lua), its three parameters a, b,
--          c, cost
-- ARGV[4 + 5n], ARGV[5 + 5n]  refunds only: when the refunded call was
--          decided (µs), and how long to remember the refund's key (ms)
--
-- A quota with cost 0 always fits: it is left out of the decision.
--
-- Reply: {allowed (0|1), now µs, then for each quota:
--         allowed alone (0|1), remaining, retry_after µs, reset_after µs}
-- For a denied call, a quota's retry_after is how long until its own cost
-- fits; the call as a whole fits after the longest of them at the earliest.
-- MAX, int_arg, clock and remember come from prelude.lua, the algorithms
-- from algorithms.lua: the lua package puts both before this script.

local count = int_arg(1, 1, 16)
local mode = int_arg(2, 0, 2)
local now = int_arg(3, 0, MAX)
local extra = 0
if mode == 2 then extra = 1 end
if not (count and mode and now) or count + extra ~= #KEYS or #ARGV ~= 3 + 5 * count + 2 * extra then
  return redis.error_reply('ERR ratelimit: multi: invalid argument')
end
local spent_at, keep = 0, 0
if mode == 2 then
  spent_at, keep = int_arg(4 + 5 * count, 0, MAX), int_arg(5 + 5 * count, 1, MAX)
  if not (spent_at and keep) then
    return redis.error_reply('ERR ratelimit: multi: invalid refund argument')
  end
end
now = clock(now)

-- Phase 1: load every quota and check its cost, writing nothing.
local algs, states, costs, fits = {}, {}, {}, {}
local all = true
for i = 1, count do
  local base = 3 + 5 * (i - 1)
  local id = int_arg(base + 1, 1, 4)
  local A = id and id ~= 3 and algorithm(id) -- the sliding log is not offered in a multi
  local a, b, c = int_arg(base + 2, 1, MAX), int_arg(base + 3, 1, MAX), int_arg(base + 4, 0, MAX)
  local cost = int_arg(base + 5, 0, MAX)
  if not (A and a and b and c and cost) then
    return redis.error_reply('ERR ratelimit: multi: invalid argument for quota ' .. i)
  end
  if not A.check(a, b, c) then
    return redis.error_reply('ERR ratelimit: multi: quota ' .. i .. ' out of range')
  end
  if cost > A.capacity(a, b, c) then
    return redis.error_reply('ERR ratelimit: multi: cost above the capacity of quota ' .. i)
  end
  algs[i], states[i], costs[i] = A, A.load(KEYS, i, a, b, c, now, mode), cost
  fits[i] = mode == 2 or cost == 0 or A.fits(states[i], cost)
  all = all and fits[i]
end

-- Phase 2: spend (or give back) everywhere, or nowhere. A quota whose state
-- was written under another limit is rewritten by any call but a Peek, so
-- that its TTL covers what the current limit needs.
local fresh = mode == 2 and remember(KEYS[count + 1], keep)
for i = 1, count do
  local A, st, cost = algs[i], states[i], costs[i]
  local write = mode ~= 0 and st.stale
  if cost > 0 then
    if fresh then
      write = A.refund(st, cost, spent_at) or write
    elseif mode == 1 and all then
      A.spend(st, cost)
      write = true
    end
  end
  if write then A.write(st) end
end

local reply = {0, now}
if all then reply[1] = 1 end
for i = 1, count do
  local remaining, retry, reset = algs[i].report(states[i], costs[i], fits[i])
  local ok = 0
  if fits[i] then ok = 1 end
  local base = 2 + 4 * (i - 1)
  reply[base + 1], reply[base + 2], reply[base + 3], reply[base + 4] = ok, remaining, retry, reset
end
return reply
