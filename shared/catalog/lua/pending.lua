-- pending.lua: show an accepted event's object as pending until a worker has verified
-- it. Only an object the catalog does not know yet becomes pending: a known entry
-- keeps answering until the worker's result replaces it.
--
-- KEYS[1]  key prefix with the hash tag, "sluice:{cat}:"
-- ARGV     groups of 5: object, size, sha256, published_us, channel
--
-- Returns how many entries were created.
local P = KEYS[1]
local created = 0
for i = 1, #ARGV, 5 do
  local OBJ = P .. 'obj:' .. ARGV[i]
  if redis.call('EXISTS', OBJ) == 0 then
    redis.call('HSET', OBJ, 'object', ARGV[i], 'size', ARGV[i + 1], 'sha256', ARGV[i + 2],
      'etag', '', 'content_type', '', 'published_us', ARGV[i + 3], 'channel', ARGV[i + 4],
      'state', 'pending', 'reason', '')
    created = created + 1
  end
end
return created
