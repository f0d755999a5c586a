-- Publish the download link of an admitted ticket. Fenced: only the grant with this
-- epoch, still admitting, may do it (a worker that lost its lease while paused cannot).
-- ARGV: 2 id, 3 epoch, 4 download_url, 5 link expiry (ms since epoch)
-- Returns "OK" or "FENCED".
reclaim()
local k = tkey(ARGV[2])
local f = redis.call('HMGET', k, 'status', 'epoch', 'tenant')
if f[1] ~= 'admitting' or f[2] ~= ARGV[3] then return 'FENCED' end
redis.call('HSET', k, 'status', 'ready', 'download_url', ARGV[4], 'expires_ms', ARGV[5], 'ready_ms', NOW)
lease(ARGV[2], f[3], tonumber(ARGV[5]))
return 'OK'
