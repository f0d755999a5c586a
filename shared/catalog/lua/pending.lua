-- pending.lua: show an accepted event's object as pending until a worker has recorded
-- a result. A pending entry is derived state in Redis: Lookup reads the object's
-- record in JetStream first, so a pending entry never hides a known one, and losing
-- it only means a short 404 until the worker records the result.
--
-- KEYS[1]  key prefix with the hash tag, "sluice:{cat}:"
-- ARGV[1]  seconds a pending entry is kept without a result
-- ARGV     then groups of 5: object, size, sha256, published_us, channel
--
-- Returns how many entries were created.
local P = KEYS[1]
local ttl = tonumber(ARGV[1])
local created = 0
for i = 2, #ARGV, 5 do
  local OBJ = P .. 'obj:' .. ARGV[i]
  if redis.call('EXISTS', OBJ) == 0 then
    redis.call('HSET', OBJ, 'object', ARGV[i], 'size', ARGV[i + 1], 'sha256', ARGV[i + 2],
      'published_us', ARGV[i + 3], 'channel', ARGV[i + 4], 'state', 'pending', 'reason', '')
    redis.call('EXPIRE', OBJ, ttl)
    created = created + 1
  end
end
return created
