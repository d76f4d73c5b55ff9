-- Count a site-day's people inside and gates' flows from what SQL recorded.
--
-- KEYS: 1 occupancy hash, 2 flow hash
-- ARGV: 1 '1' to build only when the counters are missing ('0' to replace them),
--       2 people inside, 3 people entered, 4 ttl (s), then pairs of flow field and count
--
-- Only-when-missing makes concurrent rebuilds safe: several scans that found no counters
-- each read SQL, but only the first builds; the others would otherwise reset a count that
-- entries admitted since (not yet committed in SQL) had already moved.
-- Returns 1 when it wrote, 0 when the counters were there already.

if ARGV[1] == '1' and redis.call('HEXISTS', KEYS[1], 'built') == 1 then
  return 0
end
redis.call('HDEL', KEYS[1], 'people', 'entered', 'built')
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'people', ARGV[2], 'entered', ARGV[3], 'built', 1)
if #ARGV > 4 then
  redis.call('HSET', KEYS[2], unpack(ARGV, 5, #ARGV))
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
return 1
