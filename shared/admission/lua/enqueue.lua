-- Enqueue tickets, one or many in a run (the ingress's concurrent accepts share one);
-- idempotent on each ticket's id (the ingress and every redelivery call it).
-- ARGV: 2 "1" to answer each new ticket's place in line, as poll.lua would (the ingress,
--       so that its 202 needs no read-back); what the place is counted with, as poll.lua:
--       3 slot releases needed for an estimate, 4 default global limit, 5 default
--       per-tenant limit, 6 up to how many waiting tenants the position is counted
--       exactly, 7 how old the shared order may be, ms;
--       then TICKET_FIELDS per ticket from 8: id, object, etag, size, tenant, seq,
--       created_ms, content_type, traceparent (W3C trace context of the request that
--       created it; may be empty), owner (the tenant whose key made it; empty:
--       anonymous), and "1" when the ticket is restored from its message after the
--       ledger lost it.
-- A restored ticket is queued but unclaimed: it is kept out of its tenant's queue (and
-- so never admitted) until its client shows it is still there, by polling (poll.lua)
-- or by streaming on the link it holds (stream.lua re-registration). The lost ledger
-- may have ended it in the moments before the loss (the worker holding its message
-- acknowledges ended tickets every sweep); admitted again, it would hold a slot
-- behind a link nobody holds for the token's whole TTL. Unclaimed, it only waits to
-- be dropped as abandoned (admit.lua), holding nothing.
-- Returns one answer per ticket, in order: "created" or the status the ticket already
-- has; with ARGV[2] "1", a new ticket answers
-- { "created", position, eta ms, eta known (1/0), paused (1/0) }; an error reply for
-- a ticket that could not be recorded.
local TICKET_FIELDS = 11
local places = ARGV[2] == '1'
local min_releases, default_global, default_tenant = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local exact_tenants, order_ms = tonumber(ARGV[6]), tonumber(ARGV[7])
local limits = {} -- ticket_limits by tenant: no ticket of a run changes them

-- The ticket whose fields start at ARGV[a].
local function enqueue(a)
  local id, tenant, seq, traceparent = ARGV[a], ARGV[a + 4], ARGV[a + 5], ARGV[a + 8]
  local k = tkey(id)
  local status = redis.call('HGET', k, 'status')
  if status then
    if traceparent ~= '' then redis.call('HSETNX', k, 'traceparent', traceparent) end
    return status
  end
  redis.call('HSET', k, 'id', id, 'object', ARGV[a + 1], 'etag', ARGV[a + 2], 'size', ARGV[a + 3],
    'tenant', tenant, 'seq', seq, 'created_ms', ARGV[a + 6], 'content_type', ARGV[a + 7],
    'status', 'queued', 'last_poll_ms', NOW, 'bytes_sent', 0, 'conns', 0, 'owner', ARGV[a + 9])
  if traceparent ~= '' then redis.call('HSET', k, 'traceparent', traceparent) end
  redis.call('ZADD', POLLS, NOW, id)
  if ARGV[a + 10] == '1' then
    redis.call('HSET', k, 'unclaimed', 1)
    return 'created'
  end
  redis.call('ZADD', wkey(tenant), seq, id)
  activate(tenant)
  if not places then return 'created' end
  local lim = limits[tenant]
  if not lim then
    lim = ticket_limits(tenant)
    limits[tenant] = lim
  end
  local position, own_rank = queue_position(id, tenant, lim.weight, exact_tenants, order_ms)
  local eta, known = estimate_wait(id, tenant, position, own_rank, lim, nil, nil, true,
    min_releases, default_global, default_tenant)
  return { 'created', position, eta, known, lim.paused }
end

-- A ticket whose commands fail (its key holds something else) answers an error of
-- its own; Redis does not undo what a failed script wrote, so the others go on.
local out = {}
for a = 8, #ARGV, TICKET_FIELDS do
  local ok, answer = pcall(enqueue, a)
  if not ok then answer = { err = 'ticket ' .. ARGV[a] .. ': ' .. tostring(answer) } end
  out[#out + 1] = answer
end
return out
