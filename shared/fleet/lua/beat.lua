-- One heartbeat of a node, with what it did since its previous beat.
-- KEYS[1] prefix with a hash tag: "sluice:{fleet}:"
-- ARGV: 1 node id, 2 role, 3 version, 4 address, 5 in-flight, 6 started ms,
--       7 node ttl ms, 8 window keep ms, 9 admissions, 10 bytes sent,
--       11 public url (edges that take part in edge choice, else ""), 12 cache bytes,
--       13-16 an edge cache's hits, misses, bytes from cache, bytes from origin
--       (running totals; "" without a cache),
--       17-20 the admission levels now: backlog, admissible backlog, slots in use,
--       global limit ("" when the node did not read them),
--       21.. wait histogram bucket counts (bucket i at ARGV[21 + i])
-- Keys: node:<id> hash (expires ttl after the last beat), nodes zset id -> last beat ms,
--       win:<unix second> hash admissions, bytes, w<i>, and the levels backlog,
--       admissible, slots, limit as last set in that second (expires after the window keep).
-- Returns the beat's time, ms (Redis TIME).
local P = KEYS[1]
local T = redis.call('TIME')
local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)
local id = ARGV[1]
local nk = P .. 'node:' .. id
redis.call('HSET', nk, 'id', id, 'role', ARGV[2], 'version', ARGV[3], 'address', ARGV[4],
  'in_flight', ARGV[5], 'started_ms', ARGV[6], 'last_beat_ms', NOW,
  'public_url', ARGV[11], 'cache_bytes', ARGV[12])
if ARGV[13] ~= '' then
  redis.call('HSET', nk, 'cache_hits', ARGV[13], 'cache_misses', ARGV[14],
    'cache_bytes_hit', ARGV[15], 'cache_bytes_origin', ARGV[16])
end
redis.call('PEXPIRE', nk, ARGV[7])
redis.call('ZADD', P .. 'nodes', NOW, id)
local wk = P .. 'win:' .. math.floor(NOW / 1000)
local touched = false
local function add(field, v)
  local n = tonumber(v)
  if n and n > 0 then
    redis.call('HINCRBY', wk, field, n)
    touched = true
  end
end
add('admissions', ARGV[9])
add('bytes', ARGV[10])
for i = 21, #ARGV do add('w' .. (i - 21), ARGV[i]) end
if ARGV[17] ~= '' then
  -- Levels, not sums: every ingress reads the same shared figures, the last one stays.
  redis.call('HSET', wk, 'backlog', ARGV[17], 'admissible', ARGV[18], 'slots', ARGV[19], 'limit', ARGV[20])
  touched = true
end
if touched then redis.call('PEXPIRE', wk, ARGV[8]) end
-- Servers that do not expire keys on their own (the embedded one) still forget old seconds.
local old = math.floor((NOW - tonumber(ARGV[8])) / 1000)
for s = old - 4, old do redis.call('DEL', P .. 'win:' .. s) end
return NOW
