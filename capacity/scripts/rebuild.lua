-- Replace one site-day's counters with the state proven in SQL, atomically.
--
-- KEYS: 1 epoch, 2 day hash, 3 day free units, 4 visitor id hashes, 5 slot index,
--       6 owners hash, 7 day returns, then for each slot in ARGV's payload: its hash, its
--       free units, its returns, then the keys of slots counted before but gone from SQL
-- ARGV: 1 epoch value, 2 JSON payload:
--   {"day": {"cap", "opens_at", "closed", "party_max", "owner_max", "release", "drawing",
--            "group_max", "groups": [group reservation ids], "taken": [units],
--            "returns": [[member, back_at]]},
--    "ids": [hashes], "owners": {account: "reservation ids, space-separated"},
--    "slots": [{"key", "start", "cap", "closes_at", "closed", "taken": [units], "pools",
--               "pool_until", "pool_used": {channel: places}, "by": {reservation: channel},
--               "returns": [[member, back_at]]}]}
-- (the release, pools and returns are explained in room.lua)
--
-- O(units of the day), unlike the booking scripts: it runs at start-up, after Redis lost
-- its data, or when the reconciler finds drift, never on the booking path.

local payload = cjson.decode(ARGV[2])

local function fill(hash_key, free_key, fields, taken)
  redis.call('DEL', hash_key, free_key)
  local is_taken, hwm = {}, 0
  for _, unit in ipairs(taken) do
    is_taken[unit] = true
    if unit > hwm then hwm = unit end
  end
  local batch = {}
  for unit = 1, hwm do
    if not is_taken[unit] then
      batch[#batch + 1] = unit
      batch[#batch + 1] = unit
      if #batch >= 1000 then
        redis.call('ZADD', free_key, unpack(batch))
        batch = {}
      end
    end
  end
  if #batch > 0 then
    redis.call('ZADD', free_key, unpack(batch))
  end
  redis.call('HSET', hash_key, 'hwm', hwm, 'used', #taken, unpack(fields))
end

local function fill_returns(key, returns)
  redis.call('DEL', key)
  for _, entry in ipairs(returns) do
    redis.call('ZADD', key, entry[2], entry[1])
  end
end

local day = payload.day
local day_fields = {'cap', day.cap, 'opens_at', day.opens_at, 'closed', day.closed,
  'party_max', day.party_max, 'owner_max', day.owner_max, 'release', day.release,
  'drawing', day.drawing, 'group_max', day.group_max, 'groups', #day.groups}
for _, reservation in ipairs(day.groups) do
  day_fields[#day_fields + 1] = 'grp:' .. reservation
  day_fields[#day_fields + 1] = 1
end
fill(KEYS[2], KEYS[3], day_fields, day.taken)
fill_returns(KEYS[7], day.returns)

redis.call('DEL', KEYS[4], KEYS[5], KEYS[6])
local owners = {}
for owner, ids in pairs(payload.owners) do
  owners[#owners + 1] = owner
  owners[#owners + 1] = ids
  if #owners >= 1000 then
    redis.call('HSET', KEYS[6], unpack(owners))
    owners = {}
  end
end
if #owners > 0 then
  redis.call('HSET', KEYS[6], unpack(owners))
end
local ids = payload.ids
for i = 1, #ids, 1000 do
  redis.call('SADD', KEYS[4], unpack(ids, i, math.min(i + 999, #ids)))
end

for i, slot in ipairs(payload.slots) do
  local hash_key, free_key = KEYS[5 + 3 * i], KEYS[6 + 3 * i]
  local fields = {'cap', slot.cap, 'closes_at', slot.closes_at, 'closed', slot.closed,
    'pools', slot.pools, 'pool_until', slot.pool_until}
  for channel, places in pairs(slot.pool_used) do
    fields[#fields + 1] = 'used:' .. channel
    fields[#fields + 1] = places
  end
  for reservation, channel in pairs(slot.by) do
    fields[#fields + 1] = 'by:' .. reservation
    fields[#fields + 1] = channel
  end
  fill(hash_key, free_key, fields, slot.taken)
  fill_returns(KEYS[7 + 3 * i], slot.returns)
  redis.call('ZADD', KEYS[5], slot.start, slot.key)
end

for i = 8 + 3 * #payload.slots, #KEYS do
  redis.call('DEL', KEYS[i])
end

redis.call('SET', KEYS[1], ARGV[1])
return #payload.slots
