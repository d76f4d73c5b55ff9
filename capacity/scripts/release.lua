-- Return units to one slot and its site-day, and forget visitors' ID hashes.
--
-- KEYS: 1 epoch, 2 day hash, 3 day free units, 4 visitor id hashes, 5 slot hash, 6 slot free units
-- ARGV: 1 number of slot units s, 2..1+s slot units,
--       2+s number of day units d, then d day units, then the ID hashes to forget
--
-- Idempotent: a unit that is already free (or above the high-water mark, after a rebuild)
-- is skipped, so a release that runs twice, or after a rebuild from SQL, frees nothing twice.
-- Returns {slot units freed, day units freed}.

if redis.call('EXISTS', KEYS[1]) == 0 then
  -- Counters are gone; the rebuild from SQL will count these units as free.
  return {0, 0}
end

local function give_back(hash_key, free_key, first, count)
  local hwm = tonumber(redis.call('HGET', hash_key, 'hwm') or '0')
  local freed = 0
  for i = first, first + count - 1 do
    local unit = tonumber(ARGV[i])
    if unit >= 1 and unit <= hwm and redis.call('ZADD', free_key, 'NX', unit, unit) == 1 then
      freed = freed + 1
    end
  end
  if freed > 0 then
    redis.call('HINCRBY', hash_key, 'used', -freed)
  end
  return freed
end

local s = tonumber(ARGV[1])
local d = tonumber(ARGV[2 + s])
local slot_freed = 0
if redis.call('EXISTS', KEYS[5]) == 1 then
  slot_freed = give_back(KEYS[5], KEYS[6], 2, s)
end
local day_freed = give_back(KEYS[2], KEYS[3], 3 + s, d)
local first_id = 3 + s + d
if #ARGV >= first_id then
  redis.call('SREM', KEYS[4], unpack(ARGV, first_id, #ARGV))
end
return {slot_freed, day_freed}
