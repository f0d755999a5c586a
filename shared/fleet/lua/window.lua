-- The last complete seconds of the rolling window, oldest first.
-- KEYS[1] prefix. ARGV: 1 number of seconds
-- Returns { first second (unix), { field, value, ... } per second }.
local P = KEYS[1]
local T = redis.call('TIME')
local cur = tonumber(T[1])
local n = tonumber(ARGV[1])
local out = {}
for s = cur - n, cur - 1 do
  out[#out + 1] = redis.call('HGETALL', P .. 'win:' .. s)
end
return { cur - n, out }
