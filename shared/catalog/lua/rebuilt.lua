-- rebuilt.lua: finish an alias rebuild. The generation marker is set only if the
-- rebuild's own claim is still there: a Redis wiped while the rebuild ran (the claim
-- gone) or a newer rebuild (the claim replaced) must not be marked complete.
--
-- KEYS[1]  the rebuild claim, "<prefix>rebuild"
-- KEYS[2]  the generation marker, "<prefix>gen"
-- ARGV[1]  this rebuild's token
--
-- Returns 1 when the marker was set, 0 otherwise.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
