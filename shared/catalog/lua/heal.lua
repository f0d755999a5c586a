-- heal.lua: correct the channel sets for one object that Resolve found in a channel
-- its record in JetStream does not put it in. Unlike alias.lua, it applies an entry
-- whose revision was already applied (the sets disagree with it anyway), but never
-- one older than the revision applied: a newer entry applied meanwhile is right.
--
-- KEYS[1]  key prefix with the hash tag, "sluice:{cat}:"
-- ARGV[1]  object
-- ARGV[2]  revision of its record, or -1 when it has none
-- ARGV[3]  state, ARGV[4] channel, ARGV[5] published_us: the record's
-- ARGV[6]  the channel it was found in
--
-- Returns 1 when the sets were corrected, 0 when a newer entry had been applied.
local P, object, rev = KEYS[1], ARGV[1], tonumber(ARGV[2])
local A = P .. 'a:' .. object
redis.call('ZREM', P .. 'ch:' .. ARGV[6], object)
if rev < 0 then
  redis.call('DEL', A)
  return 1
end
local prev = tonumber(redis.call('HGET', A, 'rev') or '0')
if prev > rev then
  return 0
end
local target = ''
if ARGV[3] == 'verified' then target = ARGV[4] end
if target ~= '' then
  redis.call('ZADD', P .. 'ch:' .. target, ARGV[5], object)
end
redis.call('HSET', A, 'rev', ARGV[2], 'channel', target)
return 1
