"""The Lua scripts of the shared limits: each runs atomically inside Redis, on Redis's clock (so
instances with skewed clocks still agree on the window), in one round trip.

Per client key two keys, both with the key's name as a hash tag (one Cluster slot):
`<prefix>limits:{name}` is a hash of sliding-window counters (`r<minute>` requests, `t<minute>`
tokens; only the current and the previous minute are kept) and `<prefix>leases:{name}` a sorted
set of in-flight leases scored by their expiry in ms.
"""

from __future__ import annotations

# Redis time in ms, and the minute index and its start
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local idx = math.floor(now / window)
"""

# KEYS: windows, leases. ARGV: window ms, rpm, tpm, max_in_flight (0: none), lease id, lease ms,
# then the ends of earlier calls of this key not sent yet: tokens to charge, the number of leases
# to return, their ids (so a client's next call never finds its own last call still counted).
# Admits when `previous * overlap + current + 1 <= rpm`, `... tokens < tpm` and the live leases
# are fewer than max_in_flight; then counts the request and takes the lease.
# Returns {refused ('' when admitted), requests now, previous requests, tokens now, previous
# tokens, leases held, Redis time in ms}.
ADMIT = _NOW + """
local h, z = KEYS[1], KEYS[2]
local rpm, tpm, mif = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local charge, returned = tonumber(ARGV[7]), tonumber(ARGV[8])
if charge > 0 then
  redis.call('HINCRBY', h, 't' .. idx, charge)
  redis.call('PEXPIRE', h, window * 2)
end
for i = 1, returned do redis.call('ZREM', z, ARGV[8 + i]) end
local overlap = 1 - (now % window) / window
local v = redis.call('HMGET', h, 'r' .. idx, 'r' .. (idx - 1), 't' .. idx, 't' .. (idx - 1))
local cur_r, prev_r = tonumber(v[1]) or 0, tonumber(v[2]) or 0
local cur_t, prev_t = tonumber(v[3]) or 0, tonumber(v[4]) or 0
local held = 0
if mif > 0 then
  redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
  held = redis.call('ZCARD', z)
end
local refused = ''
if rpm > 0 and prev_r * overlap + cur_r + 1 > rpm then
  refused = 'rpm'
elseif tpm > 0 and prev_t * overlap + cur_t >= tpm then
  refused = 'tpm'
elseif mif > 0 and held >= mif then
  refused = 'max_in_flight'
end
if refused == '' then
  cur_r = redis.call('HINCRBY', h, 'r' .. idx, 1)
  if redis.call('HLEN', h) > 4 then
    for _, f in ipairs(redis.call('HKEYS', h)) do
      local i = tonumber(string.sub(f, 2))
      if i ~= idx and i ~= idx - 1 then redis.call('HDEL', h, f) end
    end
  end
  redis.call('PEXPIRE', h, window * 2)
  if mif > 0 then
    local lease_ms = tonumber(ARGV[6])
    redis.call('ZADD', z, now + lease_ms, ARGV[5])
    redis.call('PEXPIRE', z, lease_ms)
    held = held + 1
  end
end
return {refused, cur_r, prev_r, cur_t, prev_t, held, now}
"""

# KEYS: windows, leases of key 1, then of key 2, ... ARGV: window ms, then per key: tokens used,
# the number of leases returned, those lease ids. The ends of many calls in one round trip.
FINISH = _NOW + """
local a = 2
for k = 1, #KEYS, 2 do
  local tokens, n = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  if tokens > 0 then
    redis.call('HINCRBY', KEYS[k], 't' .. idx, tokens)
    redis.call('PEXPIRE', KEYS[k], window * 2)
  end
  for i = 1, n do redis.call('ZREM', KEYS[k + 1], ARGV[a + 1 + i]) end
  a = a + n + 2
end
return 1
"""

# KEYS: leases sets. ARGV: window ms (unused), lease ms, then per key: the number of its leases
# held here and their ids. Extends each to now + lease ms (only leases that still exist).
RENEW = _NOW + """
local lease_ms = tonumber(ARGV[2])
local a = 3
for _, z in ipairs(KEYS) do
  local n = tonumber(ARGV[a])
  for i = 1, n do redis.call('ZADD', z, 'XX', now + lease_ms, ARGV[a + i]) end
  redis.call('PEXPIRE', z, lease_ms)
  a = a + n + 1
end
return 1
"""

# KEYS: windows, leases. ARGV: window ms. Returns {requests now, previous, tokens now, previous,
# live leases, Redis time in ms} (for /admin/keys).
WINDOW = _NOW + """
local v = redis.call('HMGET', KEYS[1], 'r' .. idx, 'r' .. (idx - 1), 't' .. idx, 't' .. (idx - 1))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
return {tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or 0,
        redis.call('ZCARD', KEYS[2]), now}
"""
