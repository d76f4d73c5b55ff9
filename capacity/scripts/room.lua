-- Shared by allocate.lua, move.lua and release.lua (prepended when they are loaded: Redis
-- scripts cannot import): how many places a sales channel may still take in a slot now, and
-- how a reservation enters and leaves a pool.
--
-- Three rules narrow a slot's cap, all kept in the counters so that one script decides:
--   release  the day hash's `release` lists "at_ms:ppm" batches in time order, ppm being the
--            share of every cap released by then, in millionths (held back until the day
--            before, or sold in batches); without it everything is on sale from `opens_at`
--   pools    the slot hash's `pools` ("window:20 group:30") keeps places for those channels
--            until `pool_until` (ms; 0: until sales end); the other channels share the rest;
--            `used:<channel>` counts each pool's places, `by:<reservation>` names the pool of
--            a reservation in one
--   returns  places given back under a refund policy that keeps them off sale for a while:
--            a sorted set of "<reservation>:<places>:<channel>" scored by when they come back

local function released_ppm(release, now)
  if not release or release == '' then
    return 1000000
  end
  local ppm = 0
  for at, share in string.gmatch(release, '(%d+):(%d+)') do
    if tonumber(at) <= now then
      ppm = tonumber(share)
    end
  end
  return ppm
end

local function share_of(cap, ppm)
  return math.floor(cap * ppm / 1000000)
end

-- Places still off sale after a refund: {channel = places}, and their total.
local function returning(returns_key, now)
  local by_channel, total = {}, 0
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', returns_key, '(' .. now, '+inf')) do
    local places, channel = string.match(member, ':(%d+):([%w-]*)$')
    places = tonumber(places or '0')
    channel = channel or 'online'
    by_channel[channel] = (by_channel[channel] or 0) + places
    total = total + places
  end
  return by_channel, total
end

-- Room for `channel` in a slot: min(the slot's released places left, the channel's share).
-- `slot` is the HMGET of 'cap', 'used', 'pools', 'pool_until'.
local function slot_room(slot_key, slot, returns_key, channel, ppm, now)
  local by_channel, held_back = returning(returns_key, now)
  local room = share_of(tonumber(slot[1]), ppm) - tonumber(slot[2]) - held_back
  local pools, pool_until = slot[3] or '', tonumber(slot[4] or '0')
  if pools == '' or (pool_until > 0 and now >= pool_until) then
    return room
  end
  local kept, pool_used, mine = 0, 0, nil
  for name, cap in string.gmatch(pools, '([%w-]+):(%d+)') do
    local pool_cap = share_of(tonumber(cap), ppm)
    local used = tonumber(redis.call('HGET', slot_key, 'used:' .. name) or '0')
    local taken = used + (by_channel[name] or 0)
    if name == channel then
      mine = pool_cap - taken
    end
    kept = kept + math.max(pool_cap, taken)
    pool_used = pool_used + used
  end
  if mine == nil then
    -- The channels without a pool share what the pools do not keep.
    local general_used = tonumber(slot[2]) - pool_used
    local general_back = held_back
    for name, places in pairs(by_channel) do
      if string.find(' ' .. pools, ' ' .. name .. ':', 1, true) then
        general_back = general_back - places
      end
    end
    mine = share_of(tonumber(slot[1]), ppm) - kept - general_used - general_back
  end
  return math.min(room, mine)
end

-- A reservation leaving a slot gives its places back to the pool it was taken from, if any.
-- Returns that pool's channel, or nil.
local function leave_pool(slot_key, reservation, places)
  if reservation == '' then
    return nil
  end
  local pool = redis.call('HGET', slot_key, 'by:' .. reservation)
  if not pool then
    return nil
  end
  redis.call('HDEL', slot_key, 'by:' .. reservation)
  if places > 0 then
    redis.call('HINCRBY', slot_key, 'used:' .. pool, -places)
  end
  return pool
end

-- A reservation taken from a pool is remembered, so that giving it back returns it there.
local function count_in_pool(slot_key, pools, channel, reservation, n)
  if pools and channel ~= '' and string.find(' ' .. pools, ' ' .. channel .. ':', 1, true) then
    redis.call('HINCRBY', slot_key, 'used:' .. channel, n)
    if reservation ~= '' then
      redis.call('HSET', slot_key, 'by:' .. reservation, channel)
    end
  end
end
