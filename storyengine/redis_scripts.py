"""The Lua scripts the decision state and retention run on Redis: one call
each for the LSH band slots and the term index of a whole batch, and the
document-frequency change of a batch (a pipeline of
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
# A commit's document-frequency change (storyengine.document_frequencies).
# KEYS: {p}:df, {p}:df:deltas, {p}:df:docs, {p}:df:version. ARGV: the packed
# delta, the change in documents, and either '' (append the delta) or the
# folded counters with the version they were computed at: written only if
# that is still the version, so a fold can never overwrite newer counts.
DF_CHANGE = """
if ARGV[3] ~= '' and (redis.call('GET', KEYS[4]) or '0') == ARGV[4] then
  redis.call('SET', KEYS[1], ARGV[3])
  redis.call('DEL', KEYS[2])
elseif ARGV[1] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[1])
end
redis.call('INCRBY', KEYS[3], ARGV[2])
return redis.call('INCR', KEYS[4])
"""
# An article's text, dropped once it is not needed (decided, or failed for
# good). A hash that held a long text stays in Redis's large encoding after
# the field goes (Redis never converts a hash back), at about twice the
# memory of the compact one: such a hash is written again, whole (its expiry
# kept), so Redis stores it compactly if what is left is small.
# DROP_TEXT_FUNCTION is the function for scripts that drop one text among
# other steps (storyengine.failures); DROP_TEXT drops the texts of KEYS.
DROP_TEXT_FUNCTION = """
local function drop_text(key)
  if redis.call('HDEL', key, 'body') == 0 or redis.call('OBJECT', 'ENCODING', key) ~= 'hashtable' then return end
  local fields, ttl = redis.call('HGETALL', key), redis.call('PTTL', key)
  redis.call('DEL', key)
  redis.call('HSET', key, unpack(fields))
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
end
"""
DROP_TEXT = DROP_TEXT_FUNCTION + """
for i = 1, #KEYS do drop_text(KEYS[i]) end
return #KEYS
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
