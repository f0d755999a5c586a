-- Is a token's slot still held? A read for the edge's HEAD, which takes no slot: it
-- changes nothing (no reclaim, no re-registration, no lease), and answers as
-- stream.lua's "begin" would, so that HEAD and GET agree on ended tickets.
-- ARGV: 2 ticket id, 3 the token's epoch.
-- Returns "OK", "NOT_HELD" or "NOGEN" (the ledger must be rebuilt first).
--
-- A token from an earlier generation whose ticket the ledger lost, or holds only as
-- queued, answers "OK": its GET would re-register (stream.lua), and HEAD must not
-- refuse a download that may still go on.
local gen = redis.call('HGET', GEN, 'base')
if not gen then return 'NOGEN' end
local id, epoch = ARGV[2], ARGV[3]
local f = redis.call('HMGET', tkey(id), 'status', 'epoch')
local status = f[1]
if tonumber(epoch) < tonumber(gen) and (not status or status == 'queued') then
  return 'OK'
end
-- a lease that lapsed is not held, even before the next reclaim takes it back
local until_ms = redis.call('ZSCORE', SLOTS, id)
if f[2] ~= epoch or not until_ms or tonumber(until_ms) <= NOW or (status ~= 'ready' and status ~= 'streaming') then
  return 'NOT_HELD'
end
return 'OK'
