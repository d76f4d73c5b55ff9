-- Count people passing a gate of one site-day: in (up to the instantaneous cap) or out.
--
-- KEYS: 1 occupancy hash (people inside, per gate, "built" once counted from SQL), 2 flow hash
-- ARGV: 1 direction ('in', 'out', or 'undo': an 'in' that did not happen), 2 people n, 3 instantaneous cap (for 'in'), 4 gate,
--       5 minute of the day (site time)
--
-- Also counts `entered` today (the day's load). Returns {'ok', inside, entered}, {'full', inside} (nothing counted: the gate holds the visitors, who
-- keep their reservation, until exits make room) or {'unbuilt'} (count from SQL first).

if redis.call('HEXISTS', KEYS[1], 'built') == 0 then
  return {'unbuilt'}
end
local n = tonumber(ARGV[2])
local inside = tonumber(redis.call('HGET', KEYS[1], 'people') or '0')
local entered = tonumber(redis.call('HGET', KEYS[1], 'entered') or '0')
if ARGV[1] == 'in' then
  if inside + n > tonumber(ARGV[3]) then
    return {'full', inside}
  end
  inside = inside + n
  entered = entered + n
elseif ARGV[1] == 'undo' then
  inside = math.max(inside - n, 0)
  entered = math.max(entered - n, 0)
else
  inside = math.max(inside - n, 0)
end
redis.call('HSET', KEYS[1], 'people', inside, 'entered', entered)
if ARGV[1] ~= 'undo' then
  redis.call('HINCRBY', KEYS[2], ARGV[5] .. ':' .. ARGV[4] .. ':' .. ARGV[1], n)
end
return {'ok', inside, entered}
