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
--       6 default global limit, 7 default per-tenant limit, 8 up to how many waiting
--       tenants the position is counted exactly, 9 how old the shared order may be, ms,
--       10 whose tickets the caller's touch keeps alive: a tenant (and tickets without
--       an owner), '' (only those), '*' (any)
-- Returns: { flat ticket hash, position, completions in window, window span ms,
--            now ms, eta ms, eta known (1/0), paused (1/0) }
reclaim()
local id = ARGV[2]
local EXACT_TENANTS, ORDER_MS = tonumber(ARGV[8]), tonumber(ARGV[9])
local k = tkey(id)
local fields = redis.call('HGETALL', k)
if #fields == 0 then return false end
local field = {}
for i = 1, #fields, 2 do field[fields[i]] = fields[i + 1] end
local status, owner = field.status, field.owner or ''
local touch = ARGV[3] == '1' and (owner == '' or ARGV[10] == '*' or (ARGV[10] ~= '' and ARGV[10] == owner))
if touch and (status == 'queued' or status == 'admitting' or status == 'ready') then
  redis.call('HSET', k, 'last_poll_ms', NOW)
  if status == 'queued' then redis.call('ZADD', POLLS, 'XX', NOW, id) end
  -- restored after the ledger was lost (enqueue.lua): its client is here, so it takes
  -- its old place in line
  if status == 'queued' and field.unclaimed and redis.call('HDEL', k, 'unclaimed') == 1 then
    local f = redis.call('HMGET', k, 'tenant', 'seq')
    redis.call('ZADD', wkey(f[1]), f[2], id)
    activate(f[1])
  end
end
-- The position of a ticket whose turn (admission virtual time) is `turn`: its rank in
-- its own queue plus, for every other active tenant u, how many of u's tickets come
-- first (u's k-th is admitted at vu + k/wu; on a tie the smaller tenant name goes
-- first, as admit.lua's ZRANGE does). Exact, at one weight read and one ZCARD per
-- tenant: used while few tenants wait.
local function exact_ahead(tenant, turn)
  local ahead = 0
  local order = redis.call('ZRANGE', TENANTS, 0, -1, 'WITHSCORES')
  for i = 1, #order, 2 do
    local u = order[i]
    if u ~= tenant then
      local vu, wu = tonumber(order[i + 1]), weight(u)
      local n = math.ceil((turn - vu) * wu - 1e-9)
      if u < tenant and math.abs((turn - vu) * wu - n) < 1e-9 then n = n + 1 end
      if n < 0 then n = 0 end
      local waiting = redis.call('ZCARD', wkey(u))
      if n > waiting then n = waiting end
      ahead = ahead + n
    end
  end
  return ahead
end

-- Many tenants: the fair order's shape, computed at most once per ORDER_MS for the
-- whole fleet by the first poll that finds it older (prelude's ORDER keys).
-- Tenant u's tickets are ahead of virtual time T about clamp((T - vu) * wu, 0, nu)
-- times; the sum over tenants is piecewise linear in T, with a break wherever a
-- tenant's queue starts (vu) or ends (vu + nu/wu). ORDER holds one member per break,
-- scored by its virtual time: "index:sum there:slope after it:tenants straddling it";
-- ORDER_T keeps each tenant's "vu nu wu" and ORDER_AT when and at which epoch.
local function build_order()
  local events = {}
  local per = {}
  local order = redis.call('ZRANGE', TENANTS, 0, -1, 'WITHSCORES')
  for i = 1, #order, 2 do
    local u, vu = order[i], tonumber(order[i + 1])
    local nu, wu = redis.call('ZCARD', wkey(u)), weight(u)
    if nu > 0 then
      events[#events + 1] = { vu, wu, 1 }
      events[#events + 1] = { vu + nu / wu, -wu, -1 }
      per[#per + 1] = u
      per[#per + 1] = string.format('%.17g %d %.17g', vu, nu, wu)
    end
  end
  table.sort(events, function(a, b) return a[1] < b[1] end)
  redis.call('DEL', ORDER, ORDER_T)
  local sum, slope, straddle, at = 0, 0, 0, nil
  local batch = {}
  local function flush()
    if #batch > 0 then redis.call('ZADD', ORDER, unpack(batch)) end
    batch = {}
  end
  local j = 0
  for i, e in ipairs(events) do
    if at then sum = sum + slope * (e[1] - at) end
    at = e[1]
    slope, straddle = slope + e[2], straddle + e[3]
    if i == #events or events[i + 1][1] > at then
      j = j + 1
      batch[#batch + 1] = at
      batch[#batch + 1] = string.format('%d:%.17g:%.17g:%d', j, sum, slope, straddle)
      if #batch >= 512 then flush() end
    end
  end
  flush()
  for i = 1, #per, 512 do
    redis.call('HSET', ORDER_T, unpack(per, i, math.min(i + 511, #per)))
  end
  redis.call('HSET', ORDER_AT, 'ms', NOW, 'epoch', redis.call('GET', P .. 'epoch') or '0')
  for _, key in ipairs({ ORDER, ORDER_T, ORDER_AT }) do redis.call('PEXPIRE', key, 10 * ORDER_MS) end
end

-- The others' tickets ahead of `turn` by the shared shape: a lookup of one break, not
-- a walk over tenants. Each tenant's staircase is taken as its line plus a half
-- (ceil(x) lies in [x, x+1)), so the error is at most half the tenants straddling
-- `turn`; admissions since the shape was built are taken off (they were the front of
-- the line, ahead of every queued ticket), so staleness costs little more.
local function shared_ahead(tenant, turn, myvt, w)
  local at = redis.call('HMGET', ORDER_AT, 'ms', 'epoch')
  if not at[1] or NOW - tonumber(at[1]) >= ORDER_MS or NOW < tonumber(at[1]) then
    build_order()
    at = { NOW, redis.call('GET', P .. 'epoch') or '0' }
  end
  local sum, straddle = 0, 0
  local brk = redis.call('ZREVRANGEBYSCORE', ORDER, string.format('%.17g', turn), '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if brk[1] then
    local _, s, slope, m = string.match(brk[1], '^(%d+):([^:]+):([^:]+):(%d+)$')
    sum = tonumber(s) + tonumber(slope) * (turn - tonumber(brk[2]))
    straddle = tonumber(m)
  end
  -- take the ticket's own tenant out: its exact rank is added by the caller
  local admitted = tonumber(redis.call('GET', P .. 'epoch') or '0') - tonumber(at[2])
  local own = redis.call('HGET', ORDER_T, tenant)
  if own then
    local v, n, wo = string.match(own, '^(%S+) (%S+) (%S+)$')
    v, n, wo = tonumber(v), tonumber(n), tonumber(wo)
    local x = (turn - v) * wo
    if x > 0 and x < n then straddle = straddle - 1 end
    if x < 0 then x = 0 elseif x > n then x = n end
    sum = sum - x
    -- the tenant's own admissions since then are not the others'
    local mine = math.floor((myvt - v) * w + 0.5)
    if mine > 0 then admitted = admitted - mine end
  end
  if admitted < 0 then admitted = 0 end
  local ahead = math.floor(sum + straddle / 2 - admitted + 0.5)
  if ahead < 0 then ahead = 0 end
  return ahead
end

local position, own_rank = 0, 0
if status == 'queued' then
  local tenant = field.tenant
  local rank = redis.call('ZRANK', wkey(tenant), id) or 0
  local myvt = tonumber(redis.call('ZSCORE', TENANTS, tenant) or '0')
  local w = weight(tenant)
  local turn = myvt + rank / w
  own_rank = rank
  if redis.call('ZCARD', TENANTS) <= EXACT_TENANTS then
    position = rank + exact_ahead(tenant, turn)
  else
    position = rank + shared_ahead(tenant, turn, myvt, w)
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
    if touch then redis.call('HDEL', k, 'eta_ms', 'eta_at_ms') end
  elseif releases >= tonumber(ARGV[5]) then
    local tenant = field.tenant
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
      if touch then redis.call('HSET', k, 'eta_ms', eta, 'eta_at_ms', NOW) end
    else
      known = 0 -- a global limit of 0: nothing is admitted until an operator raises it
    end
  else
    known = 0
  end
end
return { fields, position, count, span, NOW, eta, known, paused }
