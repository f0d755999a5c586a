-- A consistent snapshot of admission for operators and autoscalers.
-- ARGV: 2 default global limit, 3 default per-tenant limit, 4 rate window ms
-- Returns { paused, global limit, slots in use, completions in window, window span ms,
--           { tenant, queued, in use, limit, weight, ... },
--           { status, count, ... } of the tickets holding slots,
--           { status, count, ... } of the tickets that ever ended (HGETALL ended) }
reclaim()
local global = limit('global', tonumber(ARGV[2]))
local tenant_default = limit('tenant_default', tonumber(ARGV[3]))
local tenants = {}
local seen = {}
local function add(t)
  if seen[t] then return end
  seen[t] = true
  local cap = limit('tenant:' .. t, tenant_default)
  tenants[#tenants + 1] = { t, redis.call('ZCARD', wkey(t)), tenant_used(t), cap, tostring(weight(t)) }
end
for _, t in ipairs(redis.call('ZRANGE', TENANTS, 0, -1)) do add(t) end
for _, t in ipairs(redis.call('HKEYS', VT)) do
  if redis.call('ZCOUNT', skey(t), '(' .. NOW, '+inf') > 0 then add(t) end
end
redis.call('ZREMRANGEBYSCORE', DONE, '-inf', NOW - tonumber(ARGV[4]))
local first = redis.call('ZRANGE', DONE, 0, 0, 'WITHSCORES')[2]
local span = 0
if first then span = NOW - tonumber(first) end
-- Tickets holding a slot, by status: bounded by the global limit.
local holding, by_status = {}, {}
for _, id in ipairs(redis.call('ZRANGE', SLOTS, 0, -1)) do
  local st = redis.call('HGET', tkey(id), 'status')
  if st then by_status[st] = (by_status[st] or 0) + 1 end
end
for st, n in pairs(by_status) do
  holding[#holding + 1] = st
  holding[#holding + 1] = n
end
return { limit('paused', 0), global, redis.call('ZCARD', SLOTS), redis.call('ZCARD', DONE), span, tenants,
  holding, redis.call('HGETALL', ENDED) }
