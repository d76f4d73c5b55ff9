-- Start an idempotent request, or say why not.
--
-- KEYS: 1 done record, 2 in-flight lock, 3 the shard's warm marker
-- ARGV: 1 lock lifetime (ms)
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
return {'go', redis.call('EXISTS', KEYS[3])}
