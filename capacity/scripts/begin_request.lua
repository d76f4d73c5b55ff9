-- Start an idempotent request, or say why not.
--
-- KEYS: 1 done record, 2 in-flight lock, 3 the shard's warm marker, 4 the "started" marker
-- ARGV: 1 lock lifetime (ms), 2 how long a started request is remembered (ms)
--
-- Returns {'done', record}  the request finished before: replay its record
--         {'busy'}          the same key is being processed right now
--         {'go', warm}      locked for this caller; warm = 1 when the done records are
--                           complete (loaded from SQL), 0 when SQL must be asked as well

local record = redis.call('GET', KEYS[1])
if record then
  return {'done', record}
end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
  return {'busy'}
end
-- Started before, neither finished nor abandoned, and no longer locked: that attempt died,
-- maybe after its SQL commit and before its answer reached Redis. Only SQL knows.
local crashed = redis.call('EXISTS', KEYS[4])
redis.call('SET', KEYS[4], '1', 'PX', ARGV[2])
if crashed == 1 then
  return {'go', 0}
end
return {'go', redis.call('EXISTS', KEYS[3])}
