"""Every write under the assignment lock, in one call: :data:`COMMIT`.

A batch's commit is about 1,500 commands. As a MULTI/EXEC it also cost four
round trips (extend the lease, WATCH, read the lock, EXEC) and a reply to
read back per command, which took the client longer than Redis took to run
them. :data:`COMMIT` takes the commands packed in one argument, checks that
the caller still holds the lock, runs them, and appends what the change log
keeps of them (storyengine.change_log): one round trip, one reply, and
atomic, since a script runs alone.

KEYS: the assignment lock, the change log. ARGV: the holder's token, the
log's cap, the entry's token, the commands (msgpack, every argument a
string), what the log keeps of them (msgpack; '' for nothing), and the entry
that makes every replica forget what it holds. The scripts the commands call
(a script cannot call EVALSHA) run here as functions, by their SHA1. Should
a command fail midway, what ran before it stays written (Redis does not roll
a script back): the log then tells every replica to forget everything, and
the caller gets the command's error.
"""
from __future__ import annotations

from . import boilerplate
from .change_log import sha
from .redis_scripts import BAND_WRITE, DF_CHANGE, DROP_TEXT
from .story_writer import INDEX_STORY

# Every script a commit may call (storyengine.state, retention, story_writer, boilerplate).
CALLABLE = (BAND_WRITE, INDEX_STORY, DF_CHANGE, DROP_TEXT, boilerplate.COUNT)

_COMMIT = """
local scripts = {}
%(scripts)s
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('LOCKLOST the assignment lock expired before the decision was written')
end
local commands = cmsgpack.unpack(ARGV[4])
for _, c in ipairs(commands) do
  if c[1] == 'EVALSHA' and not scripts[c[2]] then
    return redis.error_reply('NOSCRIPT a commit cannot run script ' .. c[2])
  end
end
local function append(payload)
  local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  local seq = 1
  if #newest > 0 then seq = tonumber(string.match(newest[1][1], '^(%%d+)')) + 1 end
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], seq .. '-0', 't', ARGV[3], 'c', payload)
  return seq
end
for i, c in ipairs(commands) do
  local ok, err
  if c[1] == 'EVALSHA' then
    local n, keys, argv = tonumber(c[3]), {}, {}
    for j = 4, 3 + n do keys[#keys + 1] = c[j] end
    for j = 4 + n, #c do argv[#argv + 1] = c[j] end
    ok, err = pcall(scripts[c[2]], keys, argv)
    if not ok and type(err) == 'table' then err = err.err end
  else
    local reply = redis.pcall(unpack(c))
    ok = not (type(reply) == 'table' and reply.err)
    if not ok then err = reply.err end
  end
  if not ok then
    if i > 1 then pcall(append, ARGV[6]) end
    return redis.error_reply(tostring(err))
  end
end
if ARGV[5] == '' then return 0 end
return append(ARGV[5])
"""

COMMIT = _COMMIT % {"scripts": "\n".join(
    "scripts['%s'] = function(KEYS, ARGV)\n%s\nend" % (sha(script).decode(), script.strip()) for script in CALLABLE)}
