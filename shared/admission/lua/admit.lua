-- Admit up to ARGV[2] queued tickets under the global and per-tenant limits, fairly:
-- the tenant with the smallest virtual time goes next (start-time fair queueing), and a
-- tenant's virtual time advances by 1/weight per admission. FIFO within a tenant.
-- ARGV: 2 max, 3 admit lease ms, 4 abandon after ms, 5 default global limit,
--       6 default per-tenant limit (0 = none)
-- Returns a flat array, GRANT_FIELDS entries per grant: id, epoch, tenant, object, etag,
-- created_ms, traceparent, the tenant's rate (bytes/s, '' for none): everything the
-- worker needs to sign the link, so that it reads nothing back. Or {'NOGEN'} when the
-- ledger has no generation (it was lost): the caller rebuilds it (rebuild.lua) and
-- asks again.
reclaim()
local gen = redis.call('HMGET', GEN, 'base', 'open_ms', 'admits', 'global_default')
if not gen[1] then return {'NOGEN'} end
-- The global limit workers admit under until an operator sets one, for the scripts
-- that decide whether a queued ticket is worth waking a worker for (activate).
if gen[4] ~= ARGV[5] then redis.call('HSET', GEN, 'global_default', ARGV[5]) end
-- A ledger from before `admits` (a Redis kept across the upgrade) has slots it does not
-- index: they are indexed here, 512 a round, from each ticket's admitted_ms; GEN's
-- `admits` says how far (a generation built since says 'all' from the start).
if gen[3] ~= 'all' then
  local from = tonumber(gen[3] or '0')
  local ids = redis.call('ZRANGE', SLOTS, from, from + 511)
  for _, id in ipairs(ids) do
    local f = redis.call('HMGET', tkey(id), 'tenant', 'admitted_ms')
    if f[1] then
      local at = tonumber(f[2] or '') or NOW
      redis.call('ZADD', ADMITS, 'NX', at, id)
      redis.call('ZADD', akey(f[1]), 'NX', at, id)
    end
  end
  redis.call('HSET', GEN, 'admits', #ids < 512 and 'all' or tostring(from + 512))
end
local max, admit_lease, abandon = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local ABANDONED = 'dropped from the queue because the ticket was not polled; request a new ticket'
-- Abandonment, eagerly: a queued ticket not polled for `abandon` leaves its queue now,
-- not when it reaches the head, so it never counts in the positions of those behind
-- it. (A tenant left with an empty queue is tidied by the loop below.)
if abandon > 0 then
  local gone = redis.call('ZRANGEBYSCORE', POLLS, '-inf', '(' .. (NOW - abandon), 'LIMIT', 0, 512)
  for _, id in ipairs(gone) do
    local f = redis.call('HMGET', tkey(id), 'status', 'tenant')
    redis.call('ZREM', POLLS, id)
    if f[1] == 'queued' then
      redis.call('ZREM', wkey(f[2]), id)
      finish(id, 'expired', ABANDONED)
    end
  end
end
if limit('paused', 0) == 1 then return {} end
-- Just rebuilt: streams admitted before the loss re-register first (stream.lua), so
-- that the slots they hold are counted before anything new is granted.
if NOW < tonumber(gen[2]) then return {} end
local global = limit('global', tonumber(ARGV[5]))
local tenant_default = limit('tenant_default', tonumber(ARGV[6]))
local used = redis.call('ZCARD', SLOTS)
local out, granted, budget = {}, 0, 2000
-- What a round reads once per tenant, not once per grant: its limit, the slots it
-- holds (counted here as they are granted), its weight and its rate.
local full, cap, held, weights, rates = {}, {}, {}, {}, {}
local function under_cap(t)
  if cap[t] == nil then cap[t] = limit('tenant:' .. t, tenant_default) end
  if cap[t] <= 0 then return true end
  if held[t] == nil then held[t] = tenant_used(t) end
  return held[t] < cap[t]
end
local epoch = tonumber(redis.call('GET', P .. 'epoch') or '0')
local clock
while granted < max and used < global and budget > 0 do
  budget = budget - 1
  -- The first tenant in fair order that is under its limit, read 16 at a time: the
  -- head almost always is, and reading every tenant per grant would cost as many
  -- tenants as wait.
  local tenant, vt
  local from = 0
  while not tenant do
    local order = redis.call('ZRANGE', TENANTS, from, from + 15, 'WITHSCORES')
    if #order == 0 then break end
    for i = 1, #order, 2 do
      local t = order[i]
      if not full[t] then
        if under_cap(t) then
          tenant, vt = t, tonumber(order[i + 1])
          break
        end
        full[t] = true
      end
    end
    from = from + 16
  end
  if not tenant then break end
  local head = redis.call('ZPOPMIN', wkey(tenant))[1]
  if head then
    local k = tkey(head)
    local f = redis.call('HMGET', k, 'status', 'last_poll_ms', 'object', 'etag', 'created_ms', 'traceparent')
    if f[1] == 'queued' then
      -- when its client last polled: its score in `polls` (poll.lua), or for a ticket
      -- not in it (queued before it existed) its last_poll_ms
      local polled = redis.call('ZSCORE', POLLS, head) or f[2] or '0'
      if abandon > 0 and tonumber(polled) + abandon < NOW then
        -- left behind by the eager pass above (more than a round's worth), or not in
        -- `polls`: caught at the head instead
        finish(head, 'expired', ABANDONED)
      else
        redis.call('ZREM', POLLS, head)
        epoch = epoch + 1
        -- last_poll_ms: where reclaim() puts the ticket back in `polls` if this grant lapses
        redis.call('HSET', k, 'status', 'admitting', 'epoch', epoch, 'admitted_ms', NOW, 'last_poll_ms', polled)
        take_slot(head, tenant, NOW + admit_lease)
        used, granted = used + 1, granted + 1
        if held[tenant] then held[tenant] = held[tenant] + 1 end
        if rates[tenant] == nil then rates[tenant] = redis.call('HGET', LIMITS, 'rate:' .. tenant) or '' end
        local n = #out
        out[n + 1], out[n + 2], out[n + 3], out[n + 4] = head, epoch, tenant, f[3] or ''
        out[n + 5], out[n + 6], out[n + 7], out[n + 8] = f[4] or '', f[5] or '0', f[6] or '', rates[tenant]
        clock = vt
        if weights[tenant] == nil then weights[tenant] = weight(tenant) end
        vt = vt + 1 / weights[tenant]
      end
    end
  end
  if redis.call('ZCARD', wkey(tenant)) == 0 then
    redis.call('ZREM', TENANTS, tenant)
    redis.call('HSET', VT, tenant, vt)
  else
    redis.call('ZADD', TENANTS, vt, tenant)
  end
end
if granted > 0 then
  redis.call('SET', P .. 'epoch', epoch)
  redis.call('SET', VCLOCK, clock)
end
return out
