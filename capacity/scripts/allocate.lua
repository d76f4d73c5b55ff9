-- Allocate places for a party on one slot of one site-day: all of them or none.
--
-- KEYS: 1 epoch, 2 day hash, 3 day free units, 4 visitor id hashes, 5 slot hash, 6 slot free units, 7 owners hash, 8 slot returns, 9 day returns
--       (the owners hash maps an account to its active reservations this site-day, space-separated;
--       the returns are refunded places not yet back on sale, see room.lua)
-- ARGV: 1 now (ms since epoch), 2 party size n, 3 owner account ('' for none),
--       4 reservation id, 5 sales channel (online, window, group), 6 '1' when a fair
--       release's draw serves its entries ('' otherwise), 7..6+n keyed hashes of the visitors'
--       ID numbers
--
-- Returns {'ok', n, slot units..., day units...} or a refusal:
--   {'unavailable'}                   counters were not built from SQL (fail closed)
--   {'no-slot'}                       the slot is not in the counters
--   {'party-too-large', max}          more visitors than the site takes in one reservation
--   {'closed'}                        the day or the slot is closed
--   {'window', opens_at, closes_at}   outside the booking window
--   {'drawing'}                       the day's fair release is still serving its draw
--   {'duplicate', i, where}           visitor i holds a place this site-day ('day') or is
--                                     named twice in this party ('party')
--   {'account-limit', max}            the account has max active reservations this site-day
--   {'group-limit', max}              the site-day has its most group reservations already
--   {'sold-out', slot_left, day_left} not enough places left for the whole party (counting
--                                     only what is released, and this channel's share)
--
-- A group reservation (channel 'group') is bounded by the day hash's `group_max` groups,
-- counted in `groups` (its members `grp:<reservation>`), not by the party or account limits:
-- the site's composition rules, checked before, bound its size.
--
-- Lua has no rollback: every check runs before the first write.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'unavailable'}
end

local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])

local slot = redis.call('HMGET', KEYS[5], 'cap', 'hwm', 'used', 'closes_at', 'closed', 'pools',
  'pool_until')
if not slot[1] then
  return {'no-slot'}
end
local day = redis.call('HMGET', KEYS[2], 'cap', 'hwm', 'used', 'opens_at', 'closed', 'party_max',
  'owner_max', 'release', 'drawing', 'groups', 'group_max')
local channel = ARGV[5]
local group = channel == 'group'

if n > tonumber(day[6]) and not group then
  return {'party-too-large', day[6]}
end

if day[5] == '1' or slot[5] == '1' then
  return {'closed'}
end
-- A day whose fair release has entries is the draw's alone, in its pre-queue window too:
-- whoever comes then is told to enter the draw, not to come back at the release time.
if day[9] == '1' and ARGV[6] ~= '1' then
  return {'drawing'}
end
local opens_at, closes_at = tonumber(day[4]), tonumber(slot[4])
if now < opens_at or now >= closes_at then
  return {'window', day[4], slot[4]}
end

for i = 1, n do
  local id_hash = ARGV[6 + i]
  for j = 1, i - 1 do
    if ARGV[6 + j] == id_hash then
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
  for id in string.gmatch(owned, '%S+') do
    -- Group reservations do not fill an account's own day (a teacher still visits).
    if redis.call('HEXISTS', KEYS[2], 'grp:' .. id) == 0 then count = count + 1 end
  end
  -- The window sells for many visitors under one account: no per-account limit there.
  if channel ~= 'window' and not group and count >= tonumber(day[7] or '1000000') then
    return {'account-limit', day[7]}
  end
end
if group and tonumber(day[10] or '0') >= tonumber(day[11] or '0') then
  return {'group-limit', day[11] or '0'}
end

local slot_cap, slot_hwm, slot_used = tonumber(slot[1]), tonumber(slot[2]), tonumber(slot[3])
local day_cap, day_hwm, day_used = tonumber(day[1]), tonumber(day[2]), tonumber(day[3])
local ppm = released_ppm(day[8], now)
local slot_left = slot_room(KEYS[5], {slot[1], slot[3], slot[6], slot[7]}, KEYS[8], channel,
  ppm, now)
local _, day_back = returning(KEYS[9], now)
local day_left = share_of(day_cap, ppm) - day_used - day_back
if n > slot_left or n > day_left then
  return {'sold-out', math.max(slot_left, 0), math.max(day_left, 0)}
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
count_in_pool(KEYS[5], slot[6], channel, ARGV[4], n)
if group then
  redis.call('HSET', KEYS[2], 'grp:' .. ARGV[4], 1)
  redis.call('HINCRBY', KEYS[2], 'groups', 1)
end
redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', now)  -- refunds back on sale by now
redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', now)
redis.call('SADD', KEYS[4], unpack(ARGV, 7, 6 + n))
if owner ~= '' then
  redis.call('HSET', KEYS[7], owner, owned == '' and ARGV[4] or (owned .. ' ' .. ARGV[4]))
end

local reply = {'ok', n}
for i = 1, n do reply[#reply + 1] = slot_units[i] end
for i = 1, n do reply[#reply + 1] = day_units[i] end
return reply
