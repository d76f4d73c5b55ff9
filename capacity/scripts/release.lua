-- Return units to one slot and its site-day, and forget visitors' ID hashes.
--
-- KEYS: 1 epoch, 2 day hash, 3 day free units, 4 visitor id hashes, 5 slot hash, 6 slot free units, 7 owners hash, 8 slot returns, 9 day returns
-- ARGV: 1 owner account ('' for none), 2 reservation id ('' for none),
--       3 when the places go back on sale (ms; 0: at once, else they stay off sale until then:
--       a refund policy), 4 number of slot units s, 5..4+s slot units,
--       5+s number of day units d, then d day units, then the ID hashes to forget
--
-- Idempotent: a unit that is already free (or above the high-water mark, after a rebuild)
-- is skipped, and a reservation the owner no longer counts is not removed twice, so a release
-- that runs twice, or after a rebuild from SQL, frees nothing twice.
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

local owner, reservation, back_at = ARGV[1], ARGV[2], tonumber(ARGV[3])
local s = tonumber(ARGV[4])
local d = tonumber(ARGV[5 + s])
local slot_freed = 0
local channel = 'online'
if redis.call('EXISTS', KEYS[5]) == 1 then
  slot_freed = give_back(KEYS[5], KEYS[6], 5, s)
  channel = leave_pool(KEYS[5], reservation, slot_freed) or 'online'  -- room.lua
end
local day_freed = give_back(KEYS[2], KEYS[3], 6 + s, d)
if reservation ~= '' and redis.call('HDEL', KEYS[2], 'grp:' .. reservation) == 1 then
  redis.call('HINCRBY', KEYS[2], 'groups', -1)  -- a group reservation no longer counts
end

if back_at > 0 and reservation ~= '' then
  if slot_freed > 0 then
    redis.call('ZADD', KEYS[8], back_at, reservation .. ':' .. slot_freed .. ':' .. channel)
  end
  if day_freed > 0 then
    redis.call('ZADD', KEYS[9], back_at, reservation .. ':' .. day_freed .. ':' .. channel)
  end
end
if owner ~= '' then
  local kept = {}
  for id in string.gmatch(redis.call('HGET', KEYS[7], owner) or '', '%S+') do
    if id ~= reservation then kept[#kept + 1] = id end
  end
  if #kept > 0 then
    redis.call('HSET', KEYS[7], owner, table.concat(kept, ' '))
  else
    redis.call('HDEL', KEYS[7], owner)
  end
end

local first_id = 6 + s + d
if #ARGV >= first_id then
  redis.call('SREM', KEYS[4], unpack(ARGV, first_id, #ARGV))
end
return {slot_freed, day_freed}
