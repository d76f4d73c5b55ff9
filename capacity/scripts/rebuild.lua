-- Replace one site-day's counters with the state proven in SQL, atomically.
--
-- KEYS: 1 epoch, 2 day hash, 3 day free units, 4 visitor id hashes, 5 slot index,
--       6 owners hash, then for each slot in ARGV's payload: its hash, its free units,
--       then the keys of slots counted before but gone from SQL (deleted)
-- ARGV: 1 epoch value, 2 JSON payload:
--   {"day": {"cap", "opens_at", "closed", "party_max", "owner_max", "taken": [units]},
--    "ids": [hashes], "owners": {account: "reservation ids, space-separated"},
--    "slots": [{"key", "start", "cap", "closes_at", "closed", "taken": [units]}]}
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

local day = payload.day
fill(KEYS[2], KEYS[3],
  {'cap', day.cap, 'opens_at', day.opens_at, 'closed', day.closed, 'party_max', day.party_max,
   'owner_max', day.owner_max},
  day.taken)

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
  local hash_key, free_key = KEYS[5 + 2 * i], KEYS[6 + 2 * i]
  fill(hash_key, free_key,
    {'cap', slot.cap, 'closes_at', slot.closes_at, 'closed', slot.closed}, slot.taken)
  redis.call('ZADD', KEYS[5], slot.start, slot.key)
end

for i = 7 + 2 * #payload.slots, #KEYS do
  redis.call('DEL', KEYS[i])
end

redis.call('SET', KEYS[1], ARGV[1])
return #payload.slots
