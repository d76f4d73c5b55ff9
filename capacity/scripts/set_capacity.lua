-- Change the cap of a slot or of a site-day in place.
--
-- KEYS: 1 epoch, 2 the slot or day hash
-- ARGV: 1 new cap
--
-- Lowering the cap below what is already taken cancels nobody: `used` stays, so the
-- allocation script refuses new places until cancellations bring `used` under the cap.
-- Without counters (no epoch) nothing is written: the rebuild reads the new cap from SQL.

if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
redis.call('HSET', KEYS[2], 'cap', ARGV[1])
return 1
