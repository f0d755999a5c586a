-- Stream bookkeeping for the edge, fenced by (ticket, epoch).
-- ARGV: 2 op ("begin", "renew", "end"), 3 id, 4 epoch, 5 bytes sent since last call,
--       6 lease ms (begin/renew) or resume grace ms (end), 7 max connections per token
-- Returns "OK", "NOT_HELD" or "TOO_MANY".
reclaim()
local op, id = ARGV[2], ARGV[3]
local k = tkey(id)
local f = redis.call('HMGET', k, 'status', 'epoch', 'tenant', 'size')
local status, tenant = f[1], f[3]
local held = redis.call('ZSCORE', SLOTS, id)
if f[2] ~= ARGV[4] or not held or (status ~= 'ready' and status ~= 'streaming') then
  return 'NOT_HELD'
end
local sent = redis.call('HINCRBY', k, 'bytes_sent', tonumber(ARGV[5]))
if op == 'begin' then
  local conns = redis.call('HINCRBY', k, 'conns', 1)
  if conns > tonumber(ARGV[7]) then
    redis.call('HINCRBY', k, 'conns', -1)
    return 'TOO_MANY'
  end
  if status == 'ready' then redis.call('HSET', k, 'status', 'streaming', 'started_ms', NOW) end
  lease(id, tenant, NOW + tonumber(ARGV[6]))
elseif op == 'renew' then
  lease(id, tenant, NOW + tonumber(ARGV[6]))
else
  local conns = redis.call('HINCRBY', k, 'conns', -1)
  if conns <= 0 then
    redis.call('HSET', k, 'conns', 0)
    if sent >= tonumber(f[4]) then
      record_hold(id)
      release(id, tenant)
      finish(id, 'done')
    else
      -- the client may resume: keep the slot for the grace, then reclaim takes it
      lease(id, tenant, NOW + tonumber(ARGV[6]))
    end
  end
end
return 'OK'
