-- Read a ticket for its owner: marks it polled (so it is not dropped as abandoned) and
-- computes its position: how many tickets, across all tenants, are admitted before it
-- under the fair order that admit.lua follows.
-- It also estimates the wait, from how long a slot is held (the running mean of
-- admission to release, kept by record_hold in the prelude) and how long the current
-- holders have held theirs: with L slots, the ticket is admitted at the (position+1)-th
-- release from now; the first L releases are the current holders' (each at its
-- admission + mean hold; free slots at once), then every slot frees once per mean
-- hold. A tenant limit is a second, smaller set of slots the ticket also needs one of;
-- the later of the two is the estimate. It is smoothed against the previous one
-- (carried forward by the time since), so that it does not jump around between polls.
-- While admission is paused no estimate is honest (nothing moves until an operator
-- resumes): the estimate is unknown and the previous one is forgotten, so that after
-- the resume a fresh one is not dragged down by the time spent paused.
-- ARGV: 2 id, 3 touch (1/0), 4 rate window ms, 5 slot releases needed for an estimate,
--       6 default global limit, 7 default per-tenant limit
-- Returns: { flat ticket hash, position, completions in window, window span ms,
--            now ms, eta ms, eta known (1/0), paused (1/0) }
reclaim()
local id = ARGV[2]
local k = tkey(id)
local fields = redis.call('HGETALL', k)
if #fields == 0 then return false end
local status = redis.call('HGET', k, 'status')
if ARGV[3] == '1' and (status == 'queued' or status == 'admitting' or status == 'ready') then
  redis.call('HSET', k, 'last_poll_ms', NOW)
  if status == 'queued' then redis.call('ZADD', POLLS, 'XX', NOW, id) end
  -- restored after the ledger was lost (enqueue.lua): its client is here, so it takes
  -- its old place in line
  if status == 'queued' and redis.call('HDEL', k, 'unclaimed') == 1 then
    local f = redis.call('HMGET', k, 'tenant', 'seq')
    redis.call('ZADD', wkey(f[1]), f[2], id)
    activate(f[1])
  end
end
local position, own_rank = 0, 0
if status == 'queued' then
  local tenant = redis.call('HGET', k, 'tenant')
  local rank = redis.call('ZRANK', wkey(tenant), id) or 0
  local myvt = tonumber(redis.call('ZSCORE', TENANTS, tenant) or '0')
  local turn = myvt + rank / weight(tenant)
  position = rank
  own_rank = rank
  local order = redis.call('ZRANGE', TENANTS, 0, -1, 'WITHSCORES')
  for i = 1, #order, 2 do
    local u = order[i]
    if u ~= tenant then
      local vu, wu = tonumber(order[i + 1]), weight(u)
      -- u's k-th ticket is admitted at virtual time vu + k/wu; count those before ours
      local n = math.ceil((turn - vu) * wu - 1e-9)
      if u < tenant and math.abs((turn - vu) * wu - n) < 1e-9 then n = n + 1 end
      if n < 0 then n = 0 end
      local waiting = redis.call('ZCARD', wkey(u))
      if n > waiting then n = waiting end
      position = position + n
    end
  end
end
redis.call('ZREMRANGEBYSCORE', DONE, '-inf', NOW - tonumber(ARGV[4]))
local count = redis.call('ZCARD', DONE)
local first = tonumber(redis.call('ZRANGE', DONE, 0, 0, 'WITHSCORES')[2] or NOW)
local span = NOW - first
-- When the nth (0-based) admission comes with `slots` slots held by `holders`, each
-- slot freeing once per mean hold: sorted residuals, then whole rounds. Holders past
-- the mean are taken to be about to finish; while more are held than the limit (it
-- was lowered), the first releases admit nobody. Free slots are residuals of 0 and are
-- counted, not listed: the cost follows the holders looked at (at most 1024), never
-- the limit.
local function nth_admission(holders, slots, nth, hold)
  if slots <= 0 then return nil end
  local left = {}
  for _, h in ipairs(holders) do
    local admitted = tonumber(redis.call('HGET', tkey(h), 'admitted_ms') or '') or NOW
    local r = admitted + hold - NOW
    if r < 0 then r = 0 end
    left[#left + 1] = r
  end
  table.sort(left)
  local free = slots - #left
  if free < 0 then free = 0 end
  -- the sorted residuals are `free` zeros followed by `left`; skip what exceeds slots
  local skip = free + #left - slots
  local i = skip + (nth % slots) + 1
  local first = 0
  if i > free then first = left[i - free] end
  return first + math.floor(nth / slots) * hold
end

local eta, known = 0, 1
local paused = limit('paused', 0)
if status == 'queued' then
  local h = redis.call('HMGET', HOLDS, 'avg_ms', 'n')
  local hold, releases = tonumber(h[1] or '0'), tonumber(h[2] or '0')
  if paused == 1 then
    known = 0
    if ARGV[3] == '1' then redis.call('HDEL', k, 'eta_ms', 'eta_at_ms') end
  elseif releases >= tonumber(ARGV[5]) then
    local tenant = redis.call('HGET', k, 'tenant')
    local global = limit('global', tonumber(ARGV[6]))
    local raw
    local held = redis.call('ZRANGE', SLOTS, 0, 1023)
    if #held < 1024 then
      raw = nth_admission(held, global, position, hold)
    elseif global > 0 then -- too many holders to look at each: whole rounds only
      raw = (position + 1) * hold / global
    end
    local cap = limit('tenant:' .. tenant, limit('tenant_default', tonumber(ARGV[7])))
    if raw and cap > 0 then
      local mine = redis.call('ZRANGE', skey(tenant), 0, 1023)
      local t = nth_admission(mine, cap, own_rank, hold)
      if t and t > raw then raw = t end
    end
    if raw then
      eta = raw
      local prev = redis.call('HMGET', k, 'eta_ms', 'eta_at_ms')
      if prev[1] and prev[2] then
        local carried = tonumber(prev[1]) - (NOW - tonumber(prev[2]))
        if carried < 0 then carried = 0 end
        eta = carried + 0.3 * (raw - carried)
      end
      eta = math.floor(eta)
      if ARGV[3] == '1' then redis.call('HSET', k, 'eta_ms', eta, 'eta_at_ms', NOW) end
    else
      known = 0 -- a global limit of 0: nothing is admitted until an operator raises it
    end
  else
    known = 0
  end
end
return { fields, position, count, span, NOW, eta, known, paused }
