-- deadlettered.lua: say on a pending entry why it stays pending: the event that would
-- have verified it was dead-lettered. Without a pending entry nothing is written
-- (a recorded entry lives in JetStream and keeps what it has).
--
-- KEYS[1]  the pending entry, "<prefix>obj:<key>"
-- ARGV[1]  the reason to show
--
-- Returns 1 when the note was written, 0 otherwise.
if redis.call('HGET', KEYS[1], 'state') == 'pending' then
  redis.call('HSET', KEYS[1], 'reason', ARGV[1])
  return 1
end
return 0
