-- alias.lua: bring the channel alias sets in line with catalog entries (records in
-- JetStream), each at its key-value revision. A revision older than the one already
-- applied to the object is ignored, so writers racing each other, and a rebuild racing
-- live updates, leave the newest entry's view whatever their order. The same revision
-- again is applied again (it is the same entry), so a rebuild also repairs sets that
-- were lost while the per-object hashes survived.
--
-- KEYS[1]  key prefix with the hash tag, "sluice:{cat}:"
-- ARGV     groups of 5: object, revision, state, channel, published_us
--
-- Keys (under the prefix):
--   ch:<channel>  zset  verified objects of a channel -> published_us (newest = alias target)
--   a:<object>    hash  rev: the entry revision applied; channel: the set the object is in ("" for none)
--
-- Returns how many entries were applied.
local P = KEYS[1]
local applied = 0
for i = 1, #ARGV, 5 do
  local object, rev, state, channel, published = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local A = P .. 'a:' .. object
  local prev = tonumber(redis.call('HGET', A, 'rev') or '0')
  if rev >= prev then
    local target = ''
    if state == 'verified' then target = channel end
    local old = redis.call('HGET', A, 'channel')
    if old and old ~= '' and old ~= target then
      redis.call('ZREM', P .. 'ch:' .. old, object)
    end
    if target ~= '' then
      redis.call('ZADD', P .. 'ch:' .. target, published, object)
    end
    redis.call('HSET', A, 'rev', ARGV[i + 1], 'channel', target)
    applied = applied + 1
  end
end
return applied
