-- Publish the download links of admitted tickets, a whole admission round at once.
-- Fenced: only the grant with this epoch, still admitting, may do it (a worker that
-- lost its lease while paused cannot).
-- ARGV: from 2, four per ticket: id, epoch, download_url, link expiry (ms since epoch)
-- Returns one entry per ticket, in order: "OK" or "FENCED".
reclaim()
local out = {}
for i = 2, #ARGV - 3, 4 do
  local id, epoch, url, expires = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local k = tkey(id)
  local f = redis.call('HMGET', k, 'status', 'epoch', 'tenant')
  if f[1] ~= 'admitting' or f[2] ~= epoch then
    out[#out + 1] = 'FENCED'
  else
    redis.call('HSET', k, 'status', 'ready', 'download_url', url, 'expires_ms', expires, 'ready_ms', NOW)
    lease(id, f[3], tonumber(expires))
    out[#out + 1] = 'OK'
  end
end
return out
