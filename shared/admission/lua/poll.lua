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
-- ARGV: 2 id, 3 touch (1/0), 4 slot releases needed for an estimate, 5 default global
--       limit, 6 default per-tenant limit, 7 up to how many waiting tenants the
--       position is counted exactly, 8 how old the shared order may be, ms, 9 whose
--       tickets the caller's touch keeps alive: a tenant (and tickets without an
--       owner), '' (only those), '*' (any), 10 abandon after ms (0 = never)
-- Returns: { flat ticket hash, position, eta ms, eta known (1/0), paused (1/0) }
--
-- A queued ticket is read without reclaiming lapsed leases first, since the poll of a
-- waiting ticket is the commonest call there is: a lapsed holder is estimated as any
-- holder is, and a lapsed grant goes back in line at the next admission round (every
-- script that admits reclaims before it counts), so until then the position can be
-- one low. A ticket in any other state may hold a lapsed lease of its own, so it is
-- read after a reclaim. Its client's touch of a queued ticket is its score in `polls`;
-- its last_poll_ms is written only when `polls` does not hold it (queued by a version
-- before it; or polled twice in one millisecond, harmlessly) and once half the grace
-- has passed since it was last written, for a worker of the previous version, which
-- judges by it alone (admit.lua now copies the score there when it admits the ticket).
local id = ARGV[2]
local EXACT_TENANTS, ORDER_MS = tonumber(ARGV[7]), tonumber(ARGV[8])
local k = tkey(id)
local fields, field
local function read()
  fields = redis.call('HGETALL', k)
  field = {}
  for i = 1, #fields, 2 do field[fields[i]] = fields[i + 1] end
end
read()
if #fields == 0 then return false end
if field.status ~= 'queued' then
  reclaim()
  read()
end
local status, owner = field.status, field.owner or ''
local touch = ARGV[3] == '1' and (owner == '' or ARGV[9] == '*' or (ARGV[9] ~= '' and ARGV[9] == owner))
if touch and status == 'queued' then
  local in_polls = redis.call('ZADD', POLLS, 'XX', 'CH', NOW, id) == 1
  local abandon = tonumber(ARGV[10])
  if not in_polls or (abandon > 0 and tonumber(field.last_poll_ms or '0') + abandon / 2 <= NOW) then
    redis.call('HSET', k, 'last_poll_ms', NOW)
  end
  -- restored after the ledger was lost (enqueue.lua): its client is here, so it takes
  -- its old place in line
  if field.unclaimed and redis.call('HDEL', k, 'unclaimed') == 1 then
    local f = redis.call('HMGET', k, 'tenant', 'seq')
    redis.call('ZADD', wkey(f[1]), f[2], id)
    activate(f[1])
  end
elseif touch and (status == 'admitting' or status == 'ready') then
  redis.call('HSET', k, 'last_poll_ms', NOW)
end
local position, own_rank, lim = 0, 0, nil
if status == 'queued' then
  lim = ticket_limits(field.tenant)
  position, own_rank = queue_position(id, field.tenant, lim.weight, EXACT_TENANTS, ORDER_MS)
end
local eta, known, paused = 0, 1, 0
if status == 'queued' then
  paused = lim.paused
  eta, known = estimate_wait(id, field.tenant, position, own_rank, lim, field.eta_ms, field.eta_at_ms, touch,
    tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))
else
  paused = limit('paused', 0)
end
return { fields, position, eta, known, paused }
