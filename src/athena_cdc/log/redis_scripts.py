"""The Lua scripts of the Redis store: each runs atomically on the Redis server.

Keys (``P`` = the key prefix, ``{c}`` = the channel as a Cluster hash tag, so one
channel's keys share a slot):

* ``P:epoch`` -- the log's epoch (invariant 6), created with the log;
* ``P:{c}:events`` -- a stream per channel whose entry IDs are the seqs (``<seq>-0``),
  fields ``t`` (ts_ms) and ``p`` (the payload's JSON);
* ``P:{c}:meta`` -- a hash: ``seq`` (last seq assigned), ``ok`` (last seq announced:
  with a durable ``--redis-durability`` only what is durable; processes deliver up to
  it), ``ts`` (last ts_ms), ``first`` (oldest retained seq), ``dts`` (ts of the newest
  event retention dropped);
* ``P:channels`` -- the set of channel names (for age retention and stats);
* ``P:positions`` -- source positions (``<source>``) and their sort keys
  (``<source>\\0order``), for the fence.
"""

from __future__ import annotations

# The source-position fence, shared by APPEND and APPEND_SLOT (KEYS[2]: the positions
# hash; ARGV[4..7]: source, position, its order, the order it follows or ''). Refuses a
# batch whose position is not beyond the stored one (a replay) or that follows an older
# position than the stored one (another writer appended meanwhile: a stale leader).
_SOURCE_FENCE = r"""
local source = ARGV[4]
if source ~= '' then
  local stored = redis.call('HGET', KEYS[2], source .. '\0order')
  if stored and stored >= ARGV[6] then
    return redis.error_reply('STALE position ' .. ARGV[5] .. ' is not beyond the stored ' ..
      tostring(redis.call('HGET', KEYS[2], source)))
  end
  if stored and ARGV[7] ~= '' and stored > ARGV[7] then
    return redis.error_reply('STALE the stored position ' ..
      tostring(redis.call('HGET', KEYS[2], source)) .. ' is beyond the one this batch follows')
  end
end
"""

# KEYS: epoch, positions, channels, then (events, meta) per channel.
# ARGV: epoch, now_ms, maxlen, position source, position, position order, order of the
#       position the source expects to be stored (its ``after``, or ''), announce
#       ('1': PUBLISH and move ``ok`` here; '0': CONFIRM does it once durable), then per
#       channel: channel name, pub/sub channel, n, n payloads.
# Returns: per channel, its first new seq and the ts given to its events.
#
# Seqs, ts, XADD, trimming, the position and the PUBLISH happen in one script, so what
# is stored and what is announced live cannot disagree, and a batch over several
# channels is all-or-nothing.
APPEND = r"""
local epoch = redis.call('GET', KEYS[1])
if epoch ~= ARGV[1] then
  return redis.error_reply('EPOCH ' .. tostring(epoch))
end
""" + _SOURCE_FENCE + r"""local now = tonumber(ARGV[2])
local maxlen = tonumber(ARGV[3])
local announce = ARGV[8] == '1'
local result = {}
local a = 9
local k = 4
while a <= #ARGV do
  local channel, partition, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local stream, meta = KEYS[k], KEYS[k + 1]
  local m = redis.call('HMGET', meta, 'seq', 'ts', 'first', 'ok')
  local last = tonumber(m[1]) or 0
  if not announce and not m[4] then
    redis.call('HSET', meta, 'ok', string.format('%d', last))  -- not announced yet
  end
  local ts = math.max(now, tonumber(m[2]) or 0)
  local first = tonumber(m[3]) or 1
  local payloads, lengths = {}, {}
  for i = 1, n do
    local p = ARGV[a + 2 + i]
    local id = string.format('%d-0', last + i)
    redis.call('XADD', stream, id, 't', string.format('%d', ts), 'p', p)
    payloads[i] = p
    lengths[i] = #p
  end
  local excess = redis.call('XLEN', stream) - maxlen
  if excess > 0 then
    local dropped = redis.call('XRANGE', stream, '-', '+', 'COUNT', excess)
    local newest = dropped[#dropped]
    redis.call('XTRIM', stream, 'MAXLEN', maxlen)
    first = tonumber(string.match(newest[1], '^(%d+)')) + 1
    redis.call('HSET', meta, 'dts', newest[2][2])
  end
  local seq = string.format('%d', last + n)
  redis.call('HSET', meta, 'seq', seq, 'ts', string.format('%d', ts),
    'first', string.format('%d', first))
  redis.call('SADD', KEYS[3], channel)
  if announce then
    redis.call('HSET', meta, 'ok', seq)
    local header = string.format('%d %d %d %s\n', #channel, last + 1, ts,
      table.concat(lengths, ','))
    redis.call('PUBLISH', partition, header .. channel .. table.concat(payloads))
  end
  result[#result + 1] = last + 1
  result[#result + 1] = ts
  a = a + 3 + n
  k = k + 2
end
if source ~= '' then
  redis.call('HSET', KEYS[2], source, ARGV[5], source .. '\0order', ARGV[6])
end
return result
"""

# KEYS: (events, meta) per channel. ARGV per channel: channel name, pub/sub channel,
# first seq, last seq. Announces appended events once they are durable: moves ``ok``
# to the last seq (never back) and PUBLISHes them as APPEND would have.
CONFIRM = r"""
local k = 1
for a = 1, #ARGV, 4 do
  local channel, partition = ARGV[a], ARGV[a + 1]
  local stream, meta = KEYS[k], KEYS[k + 1]
  local last = tonumber(ARGV[a + 3])
  if last > (tonumber(redis.call('HGET', meta, 'ok')) or 0) then
    redis.call('HSET', meta, 'ok', ARGV[a + 3])
  end
  local entries = redis.call('XRANGE', stream, ARGV[a + 2] .. '-0', ARGV[a + 3] .. '-0')
  if #entries > 0 then
    local payloads, lengths = {}, {}
    for i, e in ipairs(entries) do
      payloads[i] = e[2][4]
      lengths[i] = #e[2][4]
    end
    local first = tonumber(string.match(entries[1][1], '^(%d+)'))
    local header = string.format('%d %d %s %s\n', #channel, first, entries[1][2][2],
      table.concat(lengths, ','))
    redis.call('PUBLISH', partition, header .. channel .. table.concat(payloads))
  end
  k = k + 2
end
return 1
"""

# KEYS: events, meta. ARGV: cutoff ts_ms. Drops the events older than the cutoff
# (retention by age: XTRIM MINID at the first seq to keep); returns how many.
PRUNE_AGE = r"""
local cutoff = tonumber(ARGV[1])
local dropped, last_id, last_ts = 0, nil, nil
while true do
  local entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 256)
  local cut = 0
  for i, e in ipairs(entries) do
    if tonumber(e[2][2]) < cutoff then cut = i else break end
  end
  if cut == 0 then break end
  last_id = tonumber(string.match(entries[cut][1], '^(%d+)'))
  last_ts = entries[cut][2][2]
  redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-0', last_id + 1))
  dropped = dropped + cut
  if cut < #entries then break end
end
if dropped > 0 then
  redis.call('HSET', KEYS[2], 'first', string.format('%d', last_id + 1), 'dts', last_ts)
end
return dropped
"""

# KEYS: events. ARGV: lowest seq, highest seq, ts_ms. The first seq in [lo, hi] whose
# event has ts >= ts_ms, or 0: a binary search (ts never decreases within a channel),
# some twenty XRANGEs on the server instead of a scan of the whole channel.
FIRST_AT_TS = r"""
local lo, hi, target = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local answer = 0
while lo <= hi do
  local mid = math.floor((lo + hi) / 2)
  local e = redis.call('XRANGE', KEYS[1], string.format('%d-0', mid), '+', 'COUNT', 1)[1]
  if e == nil then
    hi = mid - 1
  else
    local seq = tonumber(string.match(e[1], '^(%d+)'))
    if tonumber(e[2][2]) >= target then
      answer = seq
      hi = mid - 1
    else
      lo = seq + 1
    end
  end
end
return answer
"""

# Redis Cluster (athena_cdc.log.redis_cluster): APPEND for the channels of one slot.
# KEYS: the slot's epoch marker, the slot's positions, then (events, meta) per channel.
# ARGV: epoch, now_ms, maxlen, position source, position, position order, order of the
#       position the source expects to be stored (or ''), then per channel: n, n
#       payloads. Returns per channel its first new seq and ts. Announcing
#       (SPUBLISH) is the caller's: a script may only publish to its own slot's shard
#       channels, and the partitions are elsewhere.
APPEND_SLOT = r"""
local marker = redis.call('GET', KEYS[1])
if not marker then
  return redis.error_reply('LOST the slot has no epoch marker')
end
if marker ~= ARGV[1] then
  return redis.error_reply('EPOCH ' .. marker)
end
""" + _SOURCE_FENCE + r"""local now = tonumber(ARGV[2])
local maxlen = tonumber(ARGV[3])
local result = {}
local a = 8
local k = 3
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  local stream, meta = KEYS[k], KEYS[k + 1]
  local m = redis.call('HMGET', meta, 'seq', 'ts', 'first')
  local last = tonumber(m[1]) or 0
  local ts = math.max(now, tonumber(m[2]) or 0)
  local first = tonumber(m[3]) or 1
  for i = 1, n do
    redis.call('XADD', stream, string.format('%d-0', last + i), 't', string.format('%d', ts),
      'p', ARGV[a + i])
  end
  local excess = redis.call('XLEN', stream) - maxlen
  if excess > 0 then
    local dropped = redis.call('XRANGE', stream, '-', '+', 'COUNT', excess)
    local newest = dropped[#dropped]
    redis.call('XTRIM', stream, 'MAXLEN', maxlen)
    first = tonumber(string.match(newest[1], '^(%d+)')) + 1
    redis.call('HSET', meta, 'dts', newest[2][2])
  end
  local seq = string.format('%d', last + n)
  redis.call('HSET', meta, 'seq', seq, 'ok', seq, 'ts', string.format('%d', ts),
    'first', string.format('%d', first))
  result[#result + 1] = last + 1
  result[#result + 1] = ts
  a = a + 1 + n
  k = k + 2
end
if source ~= '' then
  redis.call('HSET', KEYS[2], source, ARGV[5], source .. '\0order', ARGV[6])
end
return result
"""

# KEYS: the log's epoch. ARGV: the epoch believed lost, a new one. Replaces it only if
# it is still the lost one (or missing); returns the epoch now in force.
NEW_EPOCH = r"""
local current = redis.call('GET', KEYS[1])
if not current or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return ARGV[2]
end
return current
"""
