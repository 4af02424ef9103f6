"""The Lua scripts the decision state and retention run on Redis: one call
each for the LSH band slots and the term index of a whole batch, and the
document-frequency changes of a batch in one argument (a pipeline of
hundreds of small commands costs more in the client than the server spends
answering them)."""

BAND_LOOKUP = """
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HGET', KEYS[i], ARGV[i]) or '' end
return out
"""
BAND_WRITE = """
for i = 1, #KEYS do
  local value = ARGV[2 * i]
  if value == '' then redis.call('HDEL', KEYS[i], ARGV[2 * i - 1])
  else redis.call('HSET', KEYS[i], ARGV[2 * i - 1], value) end
end
return #KEYS
"""
# The newest ARGV[2] stories of each term inside the window: a term found in
# hundreds of stories says little about which one an article belongs to, and
# the candidates that share the most weight with it are what get scored.
TERM_LOOKUP = """
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('ZREVRANGEBYSCORE', KEYS[i], '+inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
end
return out
"""
# Document-frequency changes for a whole batch in one argument: (feature
# u32, change i32) pairs, big-endian, applied as saturating BITFIELD counters.
DF_CHANGE = """
local packed = ARGV[1]
local ops = {}
for pos = 1, #packed, 8 do
  local feature, change = struct.unpack('>I4i4', packed, pos)
  ops[#ops + 1] = 'INCRBY'; ops[#ops + 1] = 'u32'; ops[#ops + 1] = '#' .. feature; ops[#ops + 1] = change
  if #ops >= 4000 then redis.call('BITFIELD', KEYS[1], 'OVERFLOW', 'SAT', unpack(ops)); ops = {} end
end
if #ops > 0 then redis.call('BITFIELD', KEYS[1], 'OVERFLOW', 'SAT', unpack(ops)) end
redis.call('INCRBY', KEYS[2], ARGV[2])
return redis.call('INCR', KEYS[3])
"""
# Whole term-index sets, for a replica (storyengine.replica) that does not hold them yet.
TERM_SETS = """
local out = {}
for i = 1, #KEYS do out[i] = redis.call('ZRANGE', KEYS[i], 0, -1, 'WITHSCORES') end
return out
"""
# One field of each hash (articles' statuses), in one call.
HASH_FIELD = """
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HGET', KEYS[i], ARGV[1]) or '' end
return out
"""
