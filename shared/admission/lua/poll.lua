-- Read a ticket for its owner: marks it polled (so it is not dropped as abandoned) and
-- computes its position: how many tickets, across all tenants, are admitted before it
-- under the fair order that admit.lua follows.
-- It also estimates the wait: the tickets ahead and this one need that many slots to
-- free up, at the completion rate measured over the window. The estimate is smoothed
-- against the previous one (carried forward by the time since), so that it does not
-- jump around between polls.
-- While admission is paused no estimate is honest (nothing moves until an operator
-- resumes): the estimate is unknown and the previous one is forgotten, so that after
-- the resume a fresh one is not dragged down by the time spent paused.
-- ARGV: 2 id, 3 touch (1/0), 4 rate window ms, 5 completions needed for an estimate
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
end
local position = 0
if status == 'queued' then
  local tenant = redis.call('HGET', k, 'tenant')
  local rank = redis.call('ZRANK', wkey(tenant), id) or 0
  local myvt = tonumber(redis.call('ZSCORE', TENANTS, tenant) or '0')
  local turn = myvt + rank / weight(tenant)
  position = rank
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
local eta, known = 0, 1
local paused = limit('paused', 0)
if status == 'queued' then
  if paused == 1 then
    known = 0
    if ARGV[3] == '1' then redis.call('HDEL', k, 'eta_ms', 'eta_at_ms') end
  elseif count >= tonumber(ARGV[5]) and span >= 1000 then
    local raw = (position + 1) * span / count
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
    known = 0
  end
end
return { fields, position, count, span, NOW, eta, known, paused }
