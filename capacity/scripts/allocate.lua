-- Allocate places for a party on one slot of one site-day: all of them or none.
--
-- KEYS: 1 epoch, 2 day hash, 3 day free units, 4 visitor id hashes, 5 slot hash, 6 slot free units, 7 owners hash
--       (the owners hash maps an account to its active reservations this site-day, space-separated)
-- ARGV: 1 now (ms since epoch), 2 party size n, 3 owner account ('' for none),
--       4 reservation id, 5..4+n keyed hashes of the visitors' ID numbers
--
-- Returns {'ok', n, slot units..., day units...} or a refusal:
--   {'unavailable'}                   counters were not built from SQL (fail closed)
--   {'no-slot'}                       the slot is not in the counters
--   {'party-too-large', max}          more visitors than the site takes in one reservation
--   {'closed'}                        the day or the slot is closed
--   {'window', opens_at, closes_at}   outside the booking window
--   {'duplicate', i, where}           visitor i holds a place this site-day ('day') or is
--                                     named twice in this party ('party')
--   {'account-limit', max}            the account has max active reservations this site-day
--   {'sold-out', slot_left, day_left} not enough places left for the whole party
--
-- Lua has no rollback: every check runs before the first write.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'unavailable'}
end

local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])

local slot = redis.call('HMGET', KEYS[5], 'cap', 'hwm', 'used', 'closes_at', 'closed')
if not slot[1] then
  return {'no-slot'}
end
local day = redis.call('HMGET', KEYS[2], 'cap', 'hwm', 'used', 'opens_at', 'closed', 'party_max',
  'owner_max')

if n > tonumber(day[6]) then
  return {'party-too-large', day[6]}
end

if day[5] == '1' or slot[5] == '1' then
  return {'closed'}
end
local opens_at, closes_at = tonumber(day[4]), tonumber(slot[4])
if now < opens_at or now >= closes_at then
  return {'window', day[4], slot[4]}
end

for i = 1, n do
  local id_hash = ARGV[4 + i]
  for j = 1, i - 1 do
    if ARGV[4 + j] == id_hash then
      return {'duplicate', i, 'party'}
    end
  end
  if redis.call('SISMEMBER', KEYS[4], id_hash) == 1 then
    return {'duplicate', i, 'day'}
  end
end

local owner = ARGV[3]
local owned = ''
if owner ~= '' then
  owned = redis.call('HGET', KEYS[7], owner) or ''
  local count = 0
  for _ in string.gmatch(owned, '%S+') do count = count + 1 end
  if count >= tonumber(day[7] or '1000000') then
    return {'account-limit', day[7]}
  end
end

local slot_cap, slot_hwm, slot_used = tonumber(slot[1]), tonumber(slot[2]), tonumber(slot[3])
local day_cap, day_hwm, day_used = tonumber(day[1]), tonumber(day[2]), tonumber(day[3])
if slot_used + n > slot_cap or day_used + n > day_cap then
  return {'sold-out', math.max(slot_cap - slot_used, 0), math.max(day_cap - day_used, 0)}
end

-- Units come from 1..cap: the lowest freed units first, then above the high-water mark.
-- Because taken + free = 1..hwm and used + n <= cap, there are always n of them.
local function take(hash_key, free_key, cap, hwm, used)
  local units = {}
  local freed = redis.call('ZRANGEBYSCORE', free_key, '-inf', cap, 'LIMIT', 0, n)
  if #freed > 0 then
    redis.call('ZREM', free_key, unpack(freed))
    for _, unit in ipairs(freed) do
      units[#units + 1] = tonumber(unit)
    end
  end
  while #units < n do
    hwm = hwm + 1
    units[#units + 1] = hwm
  end
  redis.call('HSET', hash_key, 'hwm', hwm, 'used', used + n)
  return units
end

local slot_units = take(KEYS[5], KEYS[6], slot_cap, slot_hwm, slot_used)
local day_units = take(KEYS[2], KEYS[3], day_cap, day_hwm, day_used)
redis.call('SADD', KEYS[4], unpack(ARGV, 5, 4 + n))
if owner ~= '' then
  redis.call('HSET', KEYS[7], owner, owned == '' and ARGV[4] or (owned .. ' ' .. ARGV[4]))
end

local reply = {'ok', n}
for i = 1, n do reply[#reply + 1] = slot_units[i] end
for i = 1, n do reply[#reply + 1] = day_units[i] end
return reply
