-- Move a party from one slot to another of the same site-day, atomically: it takes the new
-- slot's units and gives back the old slot's, or does nothing. The party keeps its day units,
-- its visitors' ID hashes and its place in the owner's count: it is the same visit, later.
--
-- KEYS: 1 epoch, 2 day hash, 3 old slot hash, 4 old slot free units, 5 new slot hash,
--       6 new slot free units, 7 new slot returns
-- ARGV: 1 now (ms since epoch), 2 party size n, 3 reservation id, 4 its sales channel,
--       5..4+n the old slot's units
--
-- The party moves within its channel's share of the new slot (room.lua): its pool there, if
-- the new slot keeps one for the channel.
--
-- Returns {'ok', n, new slot units...} or a refusal (nothing written):
--   {'unavailable'}                   counters were not built from SQL (fail closed)
--   {'no-slot'}                       the new slot is not in the counters
--   {'closed'}                        the day or the new slot is closed
--   {'window', opens_at, closes_at}   the new slot is not on sale now
--   {'drawing'}                       the day's fair release is still serving its draw
--   {'sold-out', slot_left, day_left} not enough places left in the new slot

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'unavailable'}
end

local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])

local reservation = ARGV[3]
local slot = redis.call('HMGET', KEYS[5], 'cap', 'hwm', 'used', 'closes_at', 'closed', 'pools',
  'pool_until')
if not slot[1] then
  return {'no-slot'}
end
local day = redis.call('HMGET', KEYS[2], 'cap', 'used', 'opens_at', 'closed', 'release', 'drawing')
if day[4] == '1' or slot[5] == '1' then
  return {'closed'}
end
if day[6] == '1' then
  return {'drawing'}
end
if now < tonumber(day[3]) or now >= tonumber(slot[4]) then
  return {'window', day[3], slot[4]}
end
local cap, hwm, used = tonumber(slot[1]), tonumber(slot[2]), tonumber(slot[3])
local channel = ARGV[4]
local left = slot_room(KEYS[5], {slot[1], slot[3], slot[6], slot[7]}, KEYS[7], channel,
  released_ppm(day[5], now), now)
if n > left then
  return {'sold-out', math.max(left, 0), math.max(tonumber(day[1]) - tonumber(day[2]), 0)}
end

-- The lowest freed units first, then above the high-water mark (as allocate.lua).
local units = {}
local freed = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', cap, 'LIMIT', 0, n)
if #freed > 0 then
  redis.call('ZREM', KEYS[6], unpack(freed))
  for _, unit in ipairs(freed) do units[#units + 1] = tonumber(unit) end
end
while #units < n do
  hwm = hwm + 1
  units[#units + 1] = hwm
end
redis.call('HSET', KEYS[5], 'hwm', hwm, 'used', used + n)
count_in_pool(KEYS[5], slot[6], channel, reservation, n)

-- Give the old units back, idempotently (as release.lua).
if redis.call('EXISTS', KEYS[3]) == 1 then
  local old_hwm = tonumber(redis.call('HGET', KEYS[3], 'hwm') or '0')
  local given = 0
  for i = 5, 4 + n do
    local unit = tonumber(ARGV[i])
    if unit >= 1 and unit <= old_hwm and redis.call('ZADD', KEYS[4], 'NX', unit, unit) == 1 then
      given = given + 1
    end
  end
  if given > 0 then
    redis.call('HINCRBY', KEYS[3], 'used', -given)
  end
  leave_pool(KEYS[3], reservation, given)  -- out of the old slot's pool, whichever it was
end

local reply = {'ok', n}
for i = 1, n do reply[#reply + 1] = units[i] end
return reply
