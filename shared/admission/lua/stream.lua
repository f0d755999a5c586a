-- Stream bookkeeping for the edge, fenced by (ticket, epoch).
-- ARGV: 2 op ("begin", "renew", "end"), 3 id, 4 epoch, 5 bytes sent since last call,
--       6 lease ms (begin/renew) or resume grace ms (end), 7 max connections per token,
--       8 connection id, 9 connection lease ms
-- Keys (under the prefix): c:<id>  zset  the ticket's open connections -> lease expiry, ms.
-- A connection is a lease like the slot: renewed by its stream, gone when the stream
-- ends, and when its edge died it lapses, so it stops counting against the cap.
-- The ticket's `conns` field mirrors the count of live connections.
-- Returns "OK", "NOT_HELD" or "TOO_MANY".
reclaim()
local op, id, conn = ARGV[2], ARGV[3], ARGV[8]
local conn_lease = tonumber(ARGV[9])
local k = tkey(id)
local C = ckey(id)
local f = redis.call('HMGET', k, 'status', 'epoch', 'tenant', 'size')
local status, tenant = f[1], f[3]
local held = redis.call('ZSCORE', SLOTS, id)
if f[2] ~= ARGV[4] or not held or (status ~= 'ready' and status ~= 'streaming') then
  return 'NOT_HELD'
end
redis.call('ZREMRANGEBYSCORE', C, '-inf', NOW) -- connections whose edge stopped renewing
local sent = redis.call('HINCRBY', k, 'bytes_sent', tonumber(ARGV[5]))
if op == 'begin' then
  if redis.call('ZCARD', C) >= tonumber(ARGV[7]) then
    return 'TOO_MANY'
  end
  redis.call('ZADD', C, NOW + conn_lease, conn)
  if status == 'ready' then redis.call('HSET', k, 'status', 'streaming', 'started_ms', NOW) end
  lease(id, tenant, NOW + tonumber(ARGV[6]))
elseif op == 'renew' then
  redis.call('ZADD', C, NOW + conn_lease, conn)
  lease(id, tenant, NOW + tonumber(ARGV[6]))
else
  redis.call('ZREM', C, conn)
end
local open = redis.call('ZCARD', C)
redis.call('HSET', k, 'conns', open)
if open > 0 then
  redis.call('PEXPIRE', C, conn_lease)
elseif op == 'end' then
  if sent >= tonumber(f[4]) then
    record_hold(id)
    release(id, tenant)
    finish(id, 'done')
  else
    -- the client may resume: keep the slot for the grace, then reclaim takes it
    lease(id, tenant, NOW + tonumber(ARGV[6]))
  end
end
return 'OK'
