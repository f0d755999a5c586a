-- Prelude of every admission script (prepended by ledger.go).
--
-- KEYS[1] is the key prefix, with a hash tag so that every key lives in one cluster
--         slot: "sluice:{adm}:".
-- ARGV[1] is how long a finished ticket is kept, in milliseconds.
--
-- Keys (all under the prefix):
--   t:<id>         hash   one ticket (see ticket.go for the fields)
--   wait:<tenant>  zset   queued ticket ids of a tenant, scored by stream sequence (FIFO)
--   polls          zset   queued ticket ids -> when their client last polled, ms (abandonment)
--   c:<id>         zset   a ticket's open connections -> lease expiry, ms (stream.lua)
--   tenants        zset   tenants with queued tickets, scored by their virtual time
--   vt             hash   tenant -> virtual time, kept while the tenant is idle
--   vclock         string virtual time of the last admission
--   slots          zset   held slots (slot id = ticket id) -> lease expiry, ms
--   slots:<tenant> zset   the same, per tenant; counted only where the lease is live
--   epoch          string fencing epoch, incremented for every grant
--   limits         hash   global, tenant_default, tenant:<t>, weight:<t>, paused
--   done           zset   recently completed ticket ids -> completion time, ms
--   holds          hash   avg_ms: running mean of how long a slot is held, admission to
--                         release, over tickets that ended holding one; n: how many
--   ended          hash   status -> tickets that ended in it, ever (metrics counters)
--   endlog         stream one entry (id) per ticket that ended, the last ENDLOG_MAX or so:
--                         workers read it to settle the messages they hold
--                         (Ledger.EndedSince) instead of asking after every held ticket
--   wake           channel (pub/sub, not a key) published when a slot frees or a ticket
--                         joins a wait queue: workers admit at once instead of at their
--                         next tick (Ledger.Wakeups); at most one message per script run
--   gen            hash   the ledger's generation (rebuild.lua): base (first epoch of this
--                         generation), open_ms (admission resumes then), id, built_ms.
--                         Missing: the ledger was lost (or never built) and must be
--                         rebuilt from JetStream before anything is admitted.
--
-- Time is always Redis TIME, never the client's clock.
local P = KEYS[1]
local RETAIN_MS = tonumber(ARGV[1])
local T = redis.call('TIME')
local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)

local SLOTS = P .. 'slots'
local TENANTS = P .. 'tenants'
local VT = P .. 'vt'
local VCLOCK = P .. 'vclock'
local LIMITS = P .. 'limits'
local DONE = P .. 'done'
local ENDED = P .. 'ended'
local HOLDS = P .. 'holds'
local POLLS = P .. 'polls'
local GEN = P .. 'gen'
local ENDLOG = P .. 'endlog'
local ENDLOG_MAX = 20000

local function tkey(id) return P .. 't:' .. id end
local function wkey(tenant) return P .. 'wait:' .. tenant end
local function ckey(id) return P .. 'c:' .. id end
local function skey(tenant) return P .. 'slots:' .. tenant end

local function limit(field, default)
  local v = redis.call('HGET', LIMITS, field)
  if v then return tonumber(v) end
  return default
end

local function weight(tenant)
  local w = limit('weight:' .. tenant, 1)
  if w <= 0 then w = 1 end
  return w
end

-- Slots held by a tenant right now (expired leases are not counted, even before reclaim).
local function tenant_used(tenant)
  return redis.call('ZCOUNT', skey(tenant), '(' .. NOW, '+inf')
end

-- Tells the workers that admission may have work: a slot was freed or a ticket joined
-- a wait queue. Once per script run, however many tickets it touched.
local woken = false
local function wake()
  if woken then return end
  woken = true
  redis.call('PUBLISH', P .. 'wake', '')
end

local function lease(id, tenant, until_ms)
  redis.call('ZADD', SLOTS, until_ms, id)
  redis.call('ZADD', skey(tenant), until_ms, id)
end

local function release(id, tenant)
  if redis.call('ZREM', SLOTS, id) == 1 then wake() end
  if tenant then redis.call('ZREM', skey(tenant), id) end
end

-- A tenant that gets a queued ticket takes its place in the fair order: never behind
-- its own past (vt) and never ahead of the present (vclock), so idling earns no credit.
local function activate(tenant)
  local global = redis.call('HGET', LIMITS, 'global')
  if not global or redis.call('ZCARD', SLOTS) < tonumber(global) then wake() end
  if redis.call('ZSCORE', TENANTS, tenant) then return end
  local vt = tonumber(redis.call('HGET', VT, tenant) or '0')
  local clock = tonumber(redis.call('GET', VCLOCK) or '0')
  if vt < clock then vt = clock end
  redis.call('ZADD', TENANTS, vt, tenant)
end

-- A ticket that held a slot ended: fold how long it held it into the running mean
-- that wait estimates are made from (poll.lua). A plain mean for the first ten, then
-- an exponential one that follows changes within about ten releases.
local function record_hold(id)
  local admitted = tonumber(redis.call('HGET', tkey(id), 'admitted_ms') or '')
  if not admitted then return end
  local held = NOW - admitted
  if held < 0 then held = 0 end
  local n = redis.call('HINCRBY', HOLDS, 'n', 1)
  local avg = tonumber(redis.call('HGET', HOLDS, 'avg_ms') or '0')
  local alpha = 1 / n
  if alpha < 0.1 then alpha = 0.1 end
  redis.call('HSET', HOLDS, 'avg_ms', tostring(avg + alpha * (held - avg)))
end

local function finish(id, status, reason)
  local k = tkey(id)
  redis.call('HSET', k, 'status', status, 'error', reason or '', 'ended_ms', NOW, 'conns', 0)
  redis.call('PEXPIRE', k, RETAIN_MS)
  redis.call('ZREM', POLLS, id)
  redis.call('DEL', ckey(id))
  redis.call('HINCRBY', ENDED, status, 1)
  if status == 'done' then redis.call('ZADD', DONE, NOW, id) end
  redis.call('XADD', ENDLOG, 'MAXLEN', '~', ENDLOG_MAX, '*', 'id', id)
end

-- Eager reclaim: every lease that lapsed is taken back before anything is decided, so
-- counts are always true. What happens to the ticket depends on where it was.
local function reclaim()
  for _ = 1, 16 do
    local lapsed = redis.call('ZRANGEBYSCORE', SLOTS, '-inf', NOW, 'LIMIT', 0, 256)
    for _, id in ipairs(lapsed) do
      local k = tkey(id)
      local f = redis.call('HMGET', k, 'status', 'tenant', 'seq', 'bytes_covered', 'size', 'bytes_sent')
      local status, tenant = f[1], f[2]
      release(id, tenant)
      if status == 'admitting' then
        -- the worker that was admitting it stopped (crash or pause): back to the front
        redis.call('HSET', k, 'status', 'queued')
        redis.call('ZADD', wkey(tenant), f[3], id)
        redis.call('ZADD', POLLS, redis.call('HGET', k, 'last_poll_ms') or NOW, id)
        activate(tenant)
      elseif status == 'ready' then
        record_hold(id)
        finish(id, 'expired', 'the download link was not used before it expired; request a new ticket')
      elseif status == 'streaming' then
        record_hold(id)
        -- done only if every byte was sent at least once (stream.lua); a ticket no
        -- edge of this version streamed has no coverage and is judged by its sum
        if tonumber(f[4] or f[6] or '0') >= tonumber(f[5] or '0') then
          finish(id, 'done')
        else
          finish(id, 'expired', 'the download stopped and was not resumed in time; request a new ticket to fetch the rest')
        end
      end
    end
    if #lapsed < 256 then return end
  end
end
