-- Move a site-day's alert level, once: of many replicas seeing the same change, only one
-- is told it changed (and records it).
--
-- KEYS: 1 occupancy hash
-- ARGV: 1 the level now
-- Returns the level before ('' when there was none).

local before = redis.call('HGET', KEYS[1], 'level') or ''
if before ~= ARGV[1] then
  redis.call('HSET', KEYS[1], 'level', ARGV[1])
end
return before
