-- Count one more open hold for an account at a site, unless it has `limit` there already.
--
-- KEYS: 1 the account's open holds (sorted set of "site reservation", scored by hold expiry)
-- ARGV: 1 now (ms), 2 site, 3 limit, 4 reservation id, 5 the hold's expiry (ms)
--
-- Returns {'ok'} or {'limit', limit}. Holds past their expiry drop out on their own, so a
-- claim that was never given back (a crash, a lost reply) costs the account nothing for long.
-- O(the account's open holds), which the limits keep small.

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local prefix = ARGV[2] .. ' '
local count = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(member, 1, #prefix) == prefix then count = count + 1 end
end
if count >= tonumber(ARGV[3]) then
  return {'limit', ARGV[3]}
end
redis.call('ZADD', KEYS[1], ARGV[5], prefix .. ARGV[4])
-- The key outlives its last claim. A relative lifetime: deadlines are on tidegate's clock,
-- which may differ from Redis's own (a demo clock, a simulation).
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.max(tonumber(last[2]) - tonumber(ARGV[1]), 1) + 1000)
return {'ok'}
