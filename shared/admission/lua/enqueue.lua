-- Enqueue a ticket; idempotent on the ticket id (ingress and every redelivery call it).
-- ARGV: 2 id, 3 object, 4 etag, 5 size, 6 tenant, 7 seq, 8 created_ms, 9 content_type,
--       10 traceparent (W3C trace context of the request that created it; may be empty),
--       11 owner (the tenant whose key made it; empty: anonymous),
--       12 "1" when the ticket is restored from its message after the ledger lost it
-- A restored ticket is queued but unclaimed: it is kept out of its tenant's queue (and
-- so never admitted) until its client shows it is still there, by polling (poll.lua)
-- or by streaming on the link it holds (stream.lua re-registration). The lost ledger
-- may have ended it in the moments before the loss (the worker holding its message
-- acknowledges ended tickets every sweep); admitted again, it would hold a slot
-- behind a link nobody holds for the token's whole TTL. Unclaimed, it only waits to
-- be dropped as abandoned (admit.lua), holding nothing.
--       13 "1" to answer with the new ticket's place in line, as poll.lua would (the
--          ingress, so that its 202 needs no read-back); then 14 slot releases needed
--          for an estimate, 15 default global limit, 16 default per-tenant limit,
--          17 up to how many waiting tenants the position is counted exactly, 18 how
--          old the shared order may be, ms (as poll.lua)
-- Returns "created" or the status the ticket already has; with ARGV[13] "1", a new
-- ticket answers { "created", position, eta ms, eta known (1/0), paused (1/0) }.
local id, tenant = ARGV[2], ARGV[6]
local k = tkey(id)
local status = redis.call('HGET', k, 'status')
if status then
  if ARGV[10] and ARGV[10] ~= '' then redis.call('HSETNX', k, 'traceparent', ARGV[10]) end
  return status
end
redis.call('HSET', k, 'id', id, 'object', ARGV[3], 'etag', ARGV[4], 'size', ARGV[5],
  'tenant', tenant, 'seq', ARGV[7], 'created_ms', ARGV[8], 'content_type', ARGV[9],
  'status', 'queued', 'last_poll_ms', NOW, 'bytes_sent', 0, 'conns', 0, 'owner', ARGV[11] or '')
if ARGV[10] and ARGV[10] ~= '' then redis.call('HSET', k, 'traceparent', ARGV[10]) end
redis.call('ZADD', POLLS, NOW, id)
if ARGV[12] == '1' then
  redis.call('HSET', k, 'unclaimed', 1)
  return 'created'
end
redis.call('ZADD', wkey(tenant), ARGV[7], id)
activate(tenant)
if ARGV[13] ~= '1' then return 'created' end
local lim = ticket_limits(tenant)
local position, own_rank = queue_position(id, tenant, lim.weight, tonumber(ARGV[17]), tonumber(ARGV[18]))
local eta, known = estimate_wait(id, tenant, position, own_rank, lim, nil, nil, true,
  tonumber(ARGV[14]), tonumber(ARGV[15]), tonumber(ARGV[16]))
return { 'created', position, eta, known, lim.paused }
