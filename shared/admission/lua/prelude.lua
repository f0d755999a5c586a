-- Prelude of every admission script (scripts.go: prepended to each, or the top of the
-- library of them all).
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
--   admits         zset   held slots -> when they were taken, ms (wait estimates read the
--                         n-th oldest holder with one ZRANGE instead of every holder)
--   admits:<tenant> zset  the same, per tenant
--   epoch          string fencing epoch, incremented for every grant
--   limits         hash   global, tenant_default, tenant:<t>, weight:<t>, paused
--   done           zset   recently completed ticket ids -> completion time, ms (stats.lua
--                         trims it to the rate window; at most DONE_MAX)
--   holds          hash   avg_ms: running mean of how long a slot is held, admission to
--                         release, over tickets that ended holding one; n: how many
--   ended          hash   status -> tickets that ended in it, ever (metrics counters)
--   endlog         stream one entry (id) per ticket that ended, the last ENDLOG_MAX or so:
--                         workers read it to settle the messages they hold
--                         (Ledger.EndedSince) instead of asking after every held ticket;
--                         it expires RETAIN_MS after the last end
--   wake           channel (pub/sub, not a key) published when a slot frees or a ticket
--                         joins a wait queue: workers admit at once instead of at their
--                         next tick (Ledger.Wakeups); at most one message per script run
--   order          zset   the fair order's shape for positions among many tenants (poll.lua):
--                         one member per break, scored by virtual time; order:t hash
--                         tenant -> "vt queued weight", and @ms, @epoch: when it was
--                         built (no tenant name holds '@'). Rebuilt at most once a
--                         second, by any poll.
--   stats          string the admission stats as JSON (Ledger.SharedStats), kept for a
--                         second so that the fleet's dashboards share one computation;
--                         deleted when the limits are written (records.go); no script
--                         reads it
--   gen            hash   the ledger's generation (rebuild.lua): base (first epoch of this
--                         generation), open_ms (admission resumes then), id, built_ms.
--                         Missing: the ledger was lost (or never built) and must be
--                         rebuilt from JetStream before anything is admitted.
--                         admits: 'all' once every slot is in `admits` (admit.lua
--                         indexes those of a ledger from before it), else how far.
--                         global_default: the global limit the workers admit under
--                         while no operator set one (admit.lua writes it), so that a
--                         ticket queued behind a full fleet wakes no worker (activate).
--
-- Time is always Redis TIME, never the client's clock.
--
-- The ledger runs each script as a Redis function where the server has them (one
-- library of them all, loaded once: the closures below are then built once, not on
-- every call), else as EVALSHA of this prelude and the script. Either way begin()
-- sets this call's state first; nothing else at the top level may call Redis.
local P, RETAIN_MS, NOW
local SLOTS, ADMITS, TENANTS, VT, VCLOCK, LIMITS, DONE, ENDED, HOLDS, POLLS, GEN, ORDER, ORDER_T, ENDLOG, EPOCH
local ENDLOG_MAX = 20000
local DONE_MAX = 100000
-- once per run (wake, activate); ORDER_MS is set by queue_position
local woken, wake_asked, ORDER_MS

local function begin()
  if KEYS[1] ~= P then
    P = KEYS[1]
    SLOTS, ADMITS, TENANTS, VT, VCLOCK = P .. 'slots', P .. 'admits', P .. 'tenants', P .. 'vt', P .. 'vclock'
    LIMITS, DONE, ENDED, HOLDS, POLLS, GEN = P .. 'limits', P .. 'done', P .. 'ended', P .. 'holds', P .. 'polls', P .. 'gen'
    ORDER, ORDER_T, ENDLOG, EPOCH = P .. 'order', P .. 'order:t', P .. 'endlog', P .. 'epoch'
  end
  RETAIN_MS = tonumber(ARGV[1])
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  woken, wake_asked, ORDER_MS = false, false, 1000
end

local function tkey(id) return P .. 't:' .. id end
local function wkey(tenant) return P .. 'wait:' .. tenant end
local function ckey(id) return P .. 'c:' .. id end
local function skey(tenant) return P .. 'slots:' .. tenant end
local function akey(tenant) return P .. 'admits:' .. tenant end

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

-- What a queued ticket's place and wait depend on, in one read: whether admission is
-- paused (1/0), the tenant's weight, the global limit and the tenant's (nil where no
-- operator set one: the caller's defaults apply).
local function ticket_limits(tenant)
  local v = redis.call('HMGET', LIMITS, 'paused', 'weight:' .. tenant, 'global', 'tenant:' .. tenant, 'tenant_default')
  local w = tonumber(v[2] or '1')
  if w <= 0 then w = 1 end
  return { paused = tonumber(v[1] or '0'), weight = w, global = tonumber(v[3] or ''), tenant = tonumber(v[4] or v[5] or '') }
end

-- Slots held by a tenant right now (expired leases are not counted, even before reclaim).
local function tenant_used(tenant)
  return redis.call('ZCOUNT', skey(tenant), '(' .. NOW, '+inf')
end

-- Tells the workers that admission may have work: a slot was freed or a ticket joined
-- a wait queue. Once per script run, however many tickets it touched.
local function wake()
  if woken then return end
  woken = true
  redis.call('PUBLISH', P .. 'wake', '')
end

local function lease(id, tenant, until_ms)
  redis.call('ZADD', SLOTS, until_ms, id)
  redis.call('ZADD', skey(tenant), until_ms, id)
end

-- A slot taken (a grant, or a stream re-registering or resuming): its lease, and when
-- it was taken (at, default now), for the wait estimates (nth_admission).
local function take_slot(id, tenant, until_ms, at)
  lease(id, tenant, until_ms)
  redis.call('ZADD', ADMITS, at or NOW, id)
  redis.call('ZADD', akey(tenant), at or NOW, id)
end

local function release(id, tenant)
  if redis.call('ZREM', SLOTS, id) == 1 then wake() end
  redis.call('ZREM', ADMITS, id)
  if tenant then
    redis.call('ZREM', skey(tenant), id)
    redis.call('ZREM', akey(tenant), id)
  end
end

-- A tenant that gets a queued ticket takes its place in the fair order: never behind
-- its own past (vt) and never ahead of the present (vclock), so idling earns no credit.
-- Workers are woken only when a slot is free: behind a full fleet the release of a
-- slot wakes them (release), and a ticket queued meanwhile would wake them for nothing.
-- (Asked once per script run: every slot a run frees wakes the workers itself.)
local function activate(tenant)
  if not woken and not wake_asked then
    wake_asked = true
    local global = redis.call('HGET', LIMITS, 'global') or redis.call('HGET', GEN, 'global_default')
    -- live leases only: a lapsed one is a slot the next admission round reclaims
    if not global or redis.call('ZCOUNT', SLOTS, '(' .. NOW, '+inf') < tonumber(global) then wake() end
  end
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
  if status == 'done' then
    redis.call('ZADD', DONE, NOW, id)
    -- stats.lua trims it to the rate window; this bounds it when nothing asks for stats
    redis.call('ZREMRANGEBYRANK', DONE, 0, -DONE_MAX - 1)
  end
  redis.call('XADD', ENDLOG, 'MAXLEN', '~', ENDLOG_MAX, '*', 'id', id)
  -- an entry is of use only while its ticket is kept (a reader reads the final state
  -- from the ticket): the log goes once no ticket ended for as long
  redis.call('PEXPIRE', ENDLOG, RETAIN_MS)
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

-- The position of a ticket whose turn (admission virtual time) is `turn`: its rank in
-- its own queue plus, for every other active tenant u, how many of u's tickets come
-- first (u's k-th is admitted at vu + k/wu; on a tie the smaller tenant name goes
-- first, as admit.lua's ZRANGE does). Exact, at one weight read and one ZCARD per
-- tenant: used while few tenants wait.
local function exact_ahead(tenant, turn)
  local ahead = 0
  local order = redis.call('ZRANGE', TENANTS, 0, -1, 'WITHSCORES')
  for i = 1, #order, 2 do
    local u = order[i]
    if u ~= tenant then
      local vu, wu = tonumber(order[i + 1]), weight(u)
      local n = math.ceil((turn - vu) * wu - 1e-9)
      if u < tenant and math.abs((turn - vu) * wu - n) < 1e-9 then n = n + 1 end
      if n < 0 then n = 0 end
      local waiting = redis.call('ZCARD', wkey(u))
      if n > waiting then n = waiting end
      ahead = ahead + n
    end
  end
  return ahead
end

-- Many tenants: the fair order's shape, computed at most once per ORDER_MS for the
-- whole fleet by the first poll that finds it older (prelude's ORDER keys).
-- Tenant u's tickets are ahead of virtual time T about clamp((T - vu) * wu, 0, nu)
-- times; the sum over tenants is piecewise linear in T, with a break wherever a
-- tenant's queue starts (vu) or ends (vu + nu/wu). ORDER holds one member per break,
-- scored by its virtual time: "index:sum there:slope after it:tenants straddling it";
-- ORDER_T keeps each tenant's "vu nu wu", and when and at which epoch (@ms, @epoch).
local function build_order()
  local events = {}
  local per = {}
  local order = redis.call('ZRANGE', TENANTS, 0, -1, 'WITHSCORES')
  for i = 1, #order, 2 do
    local u, vu = order[i], tonumber(order[i + 1])
    local nu, wu = redis.call('ZCARD', wkey(u)), weight(u)
    if nu > 0 then
      events[#events + 1] = { vu, wu, 1 }
      events[#events + 1] = { vu + nu / wu, -wu, -1 }
      per[#per + 1] = u
      per[#per + 1] = string.format('%.17g %d %.17g', vu, nu, wu)
    end
  end
  table.sort(events, function(a, b) return a[1] < b[1] end)
  redis.call('DEL', ORDER, ORDER_T)
  -- When and at which epoch first: every poll reads them, and a small hash (a
  -- listpack) is searched from its start.
  redis.call('HSET', ORDER_T, '@ms', NOW, '@epoch', redis.call('GET', EPOCH) or '0')
  local sum, slope, straddle, at = 0, 0, 0, nil
  local batch = {}
  local function flush()
    if #batch > 0 then redis.call('ZADD', ORDER, unpack(batch)) end
    batch = {}
  end
  local j = 0
  for i, e in ipairs(events) do
    if at then sum = sum + slope * (e[1] - at) end
    at = e[1]
    slope, straddle = slope + e[2], straddle + e[3]
    if i == #events or events[i + 1][1] > at then
      j = j + 1
      batch[#batch + 1] = at
      batch[#batch + 1] = string.format('%d:%.17g:%.17g:%d', j, sum, slope, straddle)
      if #batch >= 512 then flush() end
    end
  end
  flush()
  for i = 1, #per, 512 do
    redis.call('HSET', ORDER_T, unpack(per, i, math.min(i + 511, #per)))
  end
  for _, key in ipairs({ ORDER, ORDER_T }) do redis.call('PEXPIRE', key, 10 * ORDER_MS) end
end

-- The others' tickets ahead of `turn` by the shared shape: a lookup of one break, not
-- a walk over tenants. Each tenant's staircase is taken as its line plus a half
-- (ceil(x) lies in [x, x+1)), so the error is at most half the tenants straddling
-- `turn`; admissions since the shape was built are taken off (they were the front of
-- the line, ahead of every queued ticket), so staleness costs little more.
local function shared_ahead(tenant, turn, myvt, w)
  local at = redis.call('HMGET', ORDER_T, '@ms', '@epoch', tenant)
  if not at[1] or NOW - tonumber(at[1]) >= ORDER_MS or NOW < tonumber(at[1]) then
    build_order()
    at = redis.call('HMGET', ORDER_T, '@ms', '@epoch', tenant)
  end
  local sum, straddle = 0, 0
  local brk = redis.call('ZREVRANGEBYSCORE', ORDER, string.format('%.17g', turn), '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if brk[1] then
    local _, s, slope, m = string.match(brk[1], '^(%d+):([^:]+):([^:]+):(%d+)$')
    sum = tonumber(s) + tonumber(slope) * (turn - tonumber(brk[2]))
    straddle = tonumber(m)
  end
  -- take the ticket's own tenant out: its exact rank is added by the caller
  local admitted = tonumber(redis.call('GET', EPOCH) or '0') - tonumber(at[2])
  local own = at[3]
  if own then
    local v, n, wo = string.match(own, '^(%S+) (%S+) (%S+)$')
    v, n, wo = tonumber(v), tonumber(n), tonumber(wo)
    local x = (turn - v) * wo
    if x > 0 and x < n then straddle = straddle - 1 end
    if x < 0 then x = 0 elseif x > n then x = n end
    sum = sum - x
    -- the tenant's own admissions since then are not the others'
    local mine = math.floor((myvt - v) * w + 0.5)
    if mine > 0 then admitted = admitted - mine end
  end
  if admitted < 0 then admitted = 0 end
  local ahead = math.floor(sum + straddle / 2 - admitted + 0.5)
  if ahead < 0 then ahead = 0 end
  return ahead
end

-- The place in line of a queued ticket: its rank in its own tenant's queue and the
-- tickets of other tenants admitted before it, counted exactly while at most
-- exact_tenants tenants wait, else read from the fleet's shared shape of the fair
-- order, rebuilt when older than order_ms; w is the tenant's weight. Returns
-- position, own rank.
local function queue_position(id, tenant, w, exact_tenants, order_ms)
  ORDER_MS = order_ms
  local rank = redis.call('ZRANK', wkey(tenant), id) or 0
  local myvt = tonumber(redis.call('ZSCORE', TENANTS, tenant) or '0')
  local turn = myvt + rank / w
  if redis.call('ZCARD', TENANTS) <= exact_tenants then
    return rank + exact_ahead(tenant, turn), rank
  end
  return rank + shared_ahead(tenant, turn, myvt, w), rank
end

-- When the nth (0-based) admission comes with `slots` slots, each freeing once per mean
-- hold, the holders being those in `admits` (a zset: slot -> when it was taken): the
-- residuals, holder by holder, are sorted as their admission times are, so the one
-- needed is read by rank (one ZRANGE), then whole rounds. Holders past the mean are
-- taken to be about to finish; while more are held than the limit (it was lowered),
-- the first releases admit nobody. Free slots are residuals of 0. The cost is one
-- command whatever the number of holders or the limit.
local function nth_admission(admits, slots, nth, hold)
  if slots <= 0 then return nil end
  -- The sorted residuals are max(slots - holders, 0) zeros followed by the holders',
  -- past the first holders - slots when the limit was lowered below them: the one
  -- needed is the holder at holders - slots + nth % slots, where a negative index is a
  -- free slot. ZRANGE counts a negative index from the end, which is that holder
  -- without counting them; an index before the first answers nothing (a free slot).
  local r = nth % slots - slots
  local at = redis.call('ZRANGE', admits, r, r, 'WITHSCORES')[2]
  local first = 0
  if at then first = math.max(tonumber(at) + hold - NOW, 0) end
  return first + math.floor(nth / slots) * hold
end

-- The estimated wait of queued ticket id at position (own_rank in its tenant's queue),
-- in ms, and whether it is known (1/0); poll.lua says how. lim is ticket_limits of its
-- tenant; prev_eta, prev_at the estimate it was last given and when (nil for none).
-- touch keeps the estimate on the ticket for smoothing the next one (a poll by its
-- owner, or its creation). min_releases: slot releases needed before an estimate is
-- made; default_global, default_tenant: the limits used until an operator sets them.
local function estimate_wait(id, tenant, position, own_rank, lim, prev_eta, prev_at, touch, min_releases, default_global, default_tenant)
  local k = tkey(id)
  local eta, known = 0, 1
  local h = redis.call('HMGET', HOLDS, 'avg_ms', 'n')
  local hold, releases = tonumber(h[1] or '0'), tonumber(h[2] or '0')
  if lim.paused == 1 then
    known = 0
    if touch and prev_eta then redis.call('HDEL', k, 'eta_ms', 'eta_at_ms') end
  elseif releases >= min_releases then
    local global, cap = lim.global or default_global, lim.tenant or default_tenant
    local raw = nth_admission(ADMITS, global, position, hold)
    if raw and cap > 0 then
      local t = nth_admission(akey(tenant), cap, own_rank, hold)
      if t and t > raw then raw = t end
    end
    if raw then
      eta = raw
      if prev_eta and prev_at then
        local carried = tonumber(prev_eta) - (NOW - tonumber(prev_at))
        if carried < 0 then carried = 0 end
        eta = carried + 0.3 * (raw - carried)
      end
      eta = math.floor(eta)
      if touch then redis.call('HSET', k, 'eta_ms', eta, 'eta_at_ms', NOW) end
    else
      known = 0 -- a global limit of 0: nothing is admitted until an operator raises it
    end
  else
    known = 0
  end
  return eta, known
end
