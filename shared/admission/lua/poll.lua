-- Read a ticket for its owner: marks it polled (so it is not dropped as abandoned) and
-- computes its position: how many tickets, across all tenants, are admitted before it
-- under the fair order that admit.lua follows.
-- ARGV: 2 id, 3 touch (1/0), 4 rate window ms
-- Returns: { flat ticket hash, position, completions in window, first completion ms }
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
local first = redis.call('ZRANGE', DONE, 0, 0, 'WITHSCORES')[2] or '0'
return { fields, position, count, first, NOW }
