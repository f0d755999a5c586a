-- Stream bookkeeping for the edge, fenced by (ticket, epoch).
-- ARGV: 2 op ("begin", "renew", "end"), 3 id, 4 epoch, 5 bytes sent since last call,
--       6 lease ms (begin/renew) or resume grace ms (end), 7 max connections per token,
--       8 connection id, 9 connection lease ms, 10 tenant, 11 object, 12 etag, 13 size
--       (from the token and the edge's Stat), 14 bytes this connection accounts for in
--       all (where its first range starts plus what it sent),
--       15 default global limit, 16 default per-tenant limit, 19 resume grace ms (a
--       done ticket's link reopens within it), 20 "1" when the request asks for part of
--       the object only (a re-requested range; a whole-object GET of a done ticket is 410),
--       17 the object ranges this connection has sent so far, "start-end,..." (half-open,
--       cumulative: each call repeats what the previous ones said, so a lost or repeated
--       call changes nothing), 18 where the connection's first range starts
--
-- Done is coverage, not a sum. `bytes_sent` adds what every connection sent, for
-- progress and bandwidth; a download manager that re-requests ranges (aria2c on a slow
-- link) makes it exceed the size long before every byte went out. The ticket's
-- `covered` field is the set of byte ranges sent at least once, as sorted, disjoint,
-- non-touching intervals ("0-1048576,2097152-3145728"), merged here; `bytes_covered` is
-- its length. The last connection to end marks the ticket done only when
-- bytes_covered = size; otherwise the slot is kept for the resume grace.
-- The set holds at most MAX_SPANS intervals. A range that would add one past that is
-- left out: the ticket is never marked done on bytes it was not sent. As connections'
-- ranges grow they merge and make room, and every later call of the connection offers
-- its ranges again; a client that keeps more than MAX_SPANS holes open at the end of
-- its download has its ticket end expired after the grace instead of done.
-- Keys (under the prefix): c:<id>  zset  the ticket's open connections -> lease expiry, ms.
-- A connection is a lease like the slot: renewed by its stream, gone when the stream
-- ends, and when its edge died it lapses, so it stops counting against the cap.
-- The ticket's `conns` field mirrors the count of live connections.
--
-- Re-registration: a token from an earlier generation (its epoch is below the
-- generation's base) whose ticket the ledger lost, or holds only as queued (a worker
-- re-enqueued it from its message), takes its slot again, under the limits, as if
-- admitted now: a stream that was running when Redis was wiped keeps going, and is
-- counted before admission reopens (rebuild.lua pauses it for half a stream lease).
-- The covered set is lost with the ledger: the re-registering connection counts the
-- bytes before its first range as the client's (as the lost ledger had them, a plain
-- resume) plus its own ranges.
-- Returns "OK", "NOT_HELD", "TOO_MANY" or "NOGEN" (the ledger must be rebuilt first).
local MAX_SPANS = 64

-- Adds the ranges in `add` ("start-end,...") to ticket k's covered set, clipped to
-- size, and returns the covered length.
local function cover(k, add, size)
  local iv = {}
  for a, b in string.gmatch(redis.call('HGET', k, 'covered') or '', '(%d+)-(%d+)') do
    iv[#iv + 1] = {tonumber(a), tonumber(b)}
  end
  for a, b in string.gmatch(add or '', '(%d+)-(%d+)') do
    a, b = tonumber(a), math.min(tonumber(b), size)
    if a < b then
      local out, placed = {}, false
      for _, x in ipairs(iv) do
        if x[2] < a then
          out[#out + 1] = x
        elseif x[1] > b then
          if not placed then out[#out + 1] = {a, b}; placed = true end
          out[#out + 1] = x
        else -- overlapping or touching: one interval
          a, b = math.min(a, x[1]), math.max(b, x[2])
        end
      end
      if not placed then out[#out + 1] = {a, b} end
      if #out <= MAX_SPANS then iv = out end
    end
  end
  local parts, total = {}, 0
  for i, x in ipairs(iv) do
    parts[i] = string.format('%d-%d', x[1], x[2])
    total = total + x[2] - x[1]
  end
  redis.call('HSET', k, 'covered', table.concat(parts, ','), 'bytes_covered', string.format('%d', total))
  return total
end

reclaim()
local gen = redis.call('HGET', GEN, 'base')
if not gen then return 'NOGEN' end
local op, id, conn = ARGV[2], ARGV[3], ARGV[8]
local conn_lease = tonumber(ARGV[9])
local k = tkey(id)
local C = ckey(id)
local f = redis.call('HMGET', k, 'status', 'epoch', 'tenant', 'size')
local status, tenant = f[1], f[3]
local held = redis.call('ZSCORE', SLOTS, id)
if tonumber(ARGV[4]) < tonumber(gen) and (not status or status == 'queued') then
  if not status then tenant = ARGV[10] end
  local global = limit('global', tonumber(ARGV[15]))
  local cap = limit('tenant:' .. tenant, limit('tenant_default', tonumber(ARGV[16])))
  if redis.call('ZCARD', SLOTS) >= global or (cap > 0 and tenant_used(tenant) >= cap) then
    return 'NOT_HELD'
  end
  if not status then
    redis.call('HSET', k, 'id', id, 'object', ARGV[11], 'etag', ARGV[12], 'size', ARGV[13],
      'tenant', tenant, 'seq', 0, 'created_ms', NOW, 'content_type', '', 'last_poll_ms', NOW, 'conns', 0)
    -- the token does not say whether a key made it: only public tickets stay open
    if tenant ~= 'public' then redis.call('HSET', k, 'owner', tenant) end
    f[4] = ARGV[13]
  else
    redis.call('ZREM', wkey(tenant), id)
    redis.call('ZREM', POLLS, id)
    redis.call('HDEL', k, 'unclaimed')
  end
  -- what this connection accounts for before this call; the delta below adds the rest
  local before = tonumber(ARGV[18] or '0')
  local covered = ''
  if before > 0 then covered = string.format('0-%d', before) end
  redis.call('HSET', k, 'status', 'streaming', 'epoch', ARGV[4], 'admitted_ms', NOW, 'started_ms', NOW,
    'rebuilt_ms', NOW, 'bytes_sent', tonumber(ARGV[14]) - tonumber(ARGV[5]), 'covered', covered)
  take_slot(id, tenant, NOW + tonumber(ARGV[6]))
  status, f[2], held = 'streaming', ARGV[4], true
end
-- A download ends done the moment its last connection ends with every byte sent, but
-- "sent" is written to a socket: a download manager that lost a connection (and the
-- bytes in flight on it) asks for that range again. Within the resume grace its link
-- still works for a range (not the whole object again): the ticket takes a slot again,
-- under the limits, as if admitted now.
if op == 'begin' and status == 'done' and f[2] == ARGV[4] and not held and ARGV[20] == '1' then
  local ended = tonumber(redis.call('HGET', k, 'ended_ms') or '0')
  local global = limit('global', tonumber(ARGV[15]))
  local cap = limit('tenant:' .. tenant, limit('tenant_default', tonumber(ARGV[16])))
  if NOW - ended <= tonumber(ARGV[19] or '0') and redis.call('ZCARD', SLOTS) < global
    and not (cap > 0 and tenant_used(tenant) >= cap) then
    redis.call('PERSIST', k)
    redis.call('HSET', k, 'status', 'streaming', 'error', '', 'reopened_ms', NOW)
    redis.call('HDEL', k, 'ended_ms')
    redis.call('HINCRBY', ENDED, 'done', -1)
    redis.call('ZREM', DONE, id)
    -- held since its grant, as record_hold will count it: about to be given back
    take_slot(id, tenant, NOW + tonumber(ARGV[6]), tonumber(redis.call('HGET', k, 'admitted_ms') or ''))
    status, held = 'streaming', true
  end
end
if f[2] ~= ARGV[4] or not held or (status ~= 'ready' and status ~= 'streaming') then
  return 'NOT_HELD'
end
redis.call('ZREMRANGEBYSCORE', C, '-inf', NOW) -- connections whose edge stopped renewing
redis.call('HINCRBY', k, 'bytes_sent', tonumber(ARGV[5]))
local size = tonumber(f[4])
local covered = cover(k, ARGV[17], size)
if op == 'begin' then
  if redis.call('ZCARD', C) >= tonumber(ARGV[7]) then
    return 'TOO_MANY'
  end
  redis.call('ZADD', C, NOW + conn_lease, conn)
  if status == 'ready' then redis.call('HSET', k, 'status', 'streaming', 'started_ms', NOW) end
  lease(id, tenant, NOW + tonumber(ARGV[6]))
elseif op == 'renew' then
  redis.call('ZADD', C, NOW + conn_lease, conn)
  lease(id, tenant, NOW + tonumber(ARGV[6]))
else
  redis.call('ZREM', C, conn)
end
local open = redis.call('ZCARD', C)
redis.call('HSET', k, 'conns', open)
if open > 0 then
  redis.call('PEXPIRE', C, conn_lease)
elseif op == 'end' then
  if covered >= size then
    record_hold(id)
    release(id, tenant)
    finish(id, 'done')
  else
    -- the client may resume: keep the slot for the grace, then reclaim takes it
    lease(id, tenant, NOW + tonumber(ARGV[6]))
  end
end
return 'OK'
