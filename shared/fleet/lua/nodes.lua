-- The nodes that beat within their ttl.
-- KEYS[1] prefix. ARGV: 1 ttl ms (entries older than this are dropped from the index)
-- Returns { NOW, { field, value, ... } per live node }.
local P = KEYS[1]
local T = redis.call('TIME')
local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)
local idx = P .. 'nodes'
redis.call('ZREMRANGEBYSCORE', idx, '-inf', NOW - tonumber(ARGV[1]))
local out = {}
for _, id in ipairs(redis.call('ZRANGE', idx, 0, -1)) do
  local h = redis.call('HGETALL', P .. 'node:' .. id)
  if #h == 0 then
    redis.call('ZREM', idx, id) -- left, or its hash expired
  else
    out[#out + 1] = h
  end
end
return { NOW, out }
