-- Rebuild the ledger's own state after it was lost (Redis wiped, restarted without
-- persistence, or new): the operator's limits from their JetStream record, the fencing
-- epoch, and a new generation. Tickets come back on their own (workers re-enqueue the
-- messages they hold; the ingress restores any ticket a client asks for) and live
-- streams re-register from their tokens (stream.lua).
-- ARGV: 2 pause ms (admission waits this long so live streams re-register first),
--       3 generation id, 4.. field, value pairs of the limits hash
-- Returns 1 when this call built the generation, 0 when one existed already.
if redis.call('EXISTS', GEN) == 1 then return 0 end
redis.call('DEL', LIMITS)
for i = 4, #ARGV - 1, 2 do redis.call('HSET', LIMITS, ARGV[i], ARGV[i + 1]) end
-- Epochs only grow: every grant of this generation is above every epoch a token of an
-- earlier one carries, which is how stream.lua tells them apart.
local base = NOW * 1000
local cur = tonumber(redis.call('GET', P .. 'epoch') or '0')
if cur >= base then base = cur + 1 end
redis.call('SET', P .. 'epoch', base)
redis.call('HSET', GEN, 'base', base, 'open_ms', NOW + tonumber(ARGV[2]), 'id', ARGV[3], 'built_ms', NOW, 'admits', 'all')
return 1
