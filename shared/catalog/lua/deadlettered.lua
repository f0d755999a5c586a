-- deadlettered.lua: say on a pending entry why it stays pending: the event that would
-- have verified it was dead-lettered. An entry in any other state (or none) is left
-- as it is.
--
-- KEYS[1]  the entry, "<prefix>obj:<key>"
-- ARGV[1]  the reason to show
--
-- Returns 1 when the note was written, 0 otherwise.
if redis.call('HGET', KEYS[1], 'state') == 'pending' then
  redis.call('HSET', KEYS[1], 'reason', ARGV[1])
  return 1
end
return 0
