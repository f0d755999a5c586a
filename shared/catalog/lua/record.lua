-- record.lua: record the outcome of one release event, exactly once.
--
-- KEYS[1]  key prefix with the hash tag, "sluice:{cat}:"
-- ARGV[1]  event identity ("id:<event_id>", "obj:<key>@<sha256>", "minio:<bucket>/<key>@<etag>")
-- ARGV[2]  seconds the event identity is remembered
-- ARGV[3]  object key
-- ARGV[4]  size in bytes
-- ARGV[5]  sha256 (hex)
-- ARGV[6]  etag of the verified object version
-- ARGV[7]  content type
-- ARGV[8]  published_us: when the event was accepted (orders versions and channels)
-- ARGV[9]  channel ("" for none)
-- ARGV[10] state: verified | rejected
-- ARGV[11] reason ("" when verified)
--
-- Keys (under the prefix):
--   ev:<identity>  string  outcome of a processed event ("verified" | "rejected" | "superseded")
--   obj:<key>      hash    the catalog entry (see catalog.go)
--   ch:<channel>   zset    verified objects of a channel -> published_us (newest = alias target)
--   stats          hash    counters
--
-- Returns {1, outcome} when this call recorded the event, {0, outcome} when the event
-- had been recorded before (a redelivery or a duplicate): nothing is changed then.
local P = KEYS[1]
local EV = P .. 'ev:' .. ARGV[1]
local OBJ = P .. 'obj:' .. ARGV[3]
local STATS = P .. 'stats'

local prev = redis.call('GET', EV)
if prev then
  redis.call('HINCRBY', STATS, 'duplicate_deliveries', 1)
  return {0, prev}
end

local object, published, channel, state = ARGV[3], tonumber(ARGV[8]), ARGV[9], ARGV[10]
local cur_state = redis.call('HGET', OBJ, 'state')
local cur_pub = tonumber(redis.call('HGET', OBJ, 'published_us') or '0')
local outcome = state

-- An older event processed after a newer one (parallel workers) does not overwrite
-- the newer entry; a pending entry is always replaced by a result.
if cur_state and cur_state ~= 'pending' and published < cur_pub then
  outcome = 'superseded'
else
  local old_channel = redis.call('HGET', OBJ, 'channel')
  if old_channel and old_channel ~= '' and (old_channel ~= channel or state ~= 'verified') then
    redis.call('ZREM', P .. 'ch:' .. old_channel, object)
  end
  redis.call('HSET', OBJ, 'object', object, 'size', ARGV[4], 'sha256', ARGV[5], 'etag', ARGV[6],
    'content_type', ARGV[7], 'published_us', ARGV[8], 'channel', channel, 'state', state,
    'reason', ARGV[11], 'event', ARGV[1])
  if channel ~= '' then
    if state == 'verified' then
      redis.call('ZADD', P .. 'ch:' .. channel, ARGV[8], object)
      redis.call('SADD', P .. 'channels', channel)
    else
      redis.call('ZREM', P .. 'ch:' .. channel, object)
    end
  end
end

redis.call('SET', EV, outcome, 'EX', tonumber(ARGV[2]))
redis.call('HINCRBY', STATS, 'recorded', 1)
redis.call('HINCRBY', STATS, outcome, 1)
return {1, outcome}
