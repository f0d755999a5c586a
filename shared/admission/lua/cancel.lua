-- Cancel a ticket and give back its slot at once.
-- ARGV: 2 id. Returns the status the ticket had, or false when it does not exist.
reclaim()
local k = tkey(ARGV[2])
local f = redis.call('HMGET', k, 'status', 'tenant')
local status, tenant = f[1], f[2]
if not status then return false end
if status == 'queued' or status == 'admitting' or status == 'ready' or status == 'streaming' then
  redis.call('ZREM', wkey(tenant), ARGV[2])
  if status ~= 'queued' then record_hold(ARGV[2]) end
  release(ARGV[2], tenant)
  finish(ARGV[2], 'canceled', 'canceled by the client')
end
return status
