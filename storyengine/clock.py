"""The stream clock: a watermark over the articles' own published times.

Windows, retention and the time given to undated articles run on the
stream's event time, so an archive replays as it happened live. The clock is
not the newest ``published_at`` ever seen: one article dated years ahead (a
broken CMS clock, an undated item stamped with today) would then move it, and
retention would delete everything it had accepted.

As stream processors do (Flink, Beam: one watermark per source partition,
combined), each outlet contributes its own event times, and the clock is a
high order statistic of them rather than their maximum:

* every outlet holds at most its ``clock_per_source`` newest published times
  (by default its two newest), each time once (a retried article adds nothing);
* the clock is the ``clock_support``-th newest of all the times held (by
  default the third), or the oldest held while fewer are held, and there is
  no clock while only one time is held;
* an outlet silent for ``clock_idle_hours`` of wall clock leaves the clock
  until it posts again (Flink's idle sources): an outlet that stopped must not
  hold the clock back for the ones still publishing;
* it never goes back (the stored value is the maximum of itself and that).

Why it is safe: to move the clock to a time T, ``clock_support`` held times
must be at or after T. One outlet holds at most ``clock_per_source`` of them,
so with the defaults no single article and no single outlet can move it (a
stream of one outlet needs two of its articles to agree); the clock is always
at or before a time that several articles corroborate, so it lags the newest
article slightly and is never dragged ahead by an outlier. Undated articles
never reach it: they take the stream's current time (:func:`stream_time`).

Only dated articles that are being decided advance the clock (under the
assignment lock, in :mod:`storyengine.decider`), so it is the time of what the
deployment has decided: a replayed archive posted faster than workers decide
it does not run ahead of its decisions. The update is one script, and it
commutes (the newest times per outlet and an order statistic of them do not
depend on the order they arrive in), so it needs no lock of its own.
"""
from __future__ import annotations

import time

import redis

DAY = 86400.0

# KEYS: the held times (zset "n\0outlet" -> published), the clock (string),
# when each outlet was last heard from (zset outlet -> wall-clock seconds).
# ARGV: support, per-source, keep (most entries held), horizon (seconds below
# the clock an entry can be dropped), now (wall clock), idle (seconds of wall
# clock after which a silent outlet leaves the clock), then (outlet, published) pairs.
ADVANCE = """
local times, clock, seen = KEYS[1], KEYS[2], KEYS[3]
local support, per_source, keep, horizon = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now, idle = tonumber(ARGV[5]), tonumber(ARGV[6])
for i = 7, #ARGV, 2 do
  local source, t = ARGV[i], tonumber(ARGV[i + 1])
  redis.call('ZADD', seen, now, source)
  -- the outlet's held times, newest first, with this one placed among them;
  -- a time it already holds is not counted twice (a retried or resent article)
  local held, again = {}, false
  for rank = 1, per_source do
    local score = redis.call('ZSCORE', times, rank .. '\0' .. source)
    if score then
      held[#held + 1] = tonumber(score)
      if tonumber(score) == t then again = true end
    end
  end
  if not again then
    held[#held + 1] = t
    table.sort(held, function(a, b) return a > b end)
    for rank = 1, math.min(per_source, #held) do
      redis.call('ZADD', times, held[rank], rank .. '\0' .. source)
    end
  end
end
-- An outlet silent for `idle` seconds of wall clock leaves the clock until it
-- posts again (as stream processors mark an idle partition), so one outlet
-- that stopped cannot hold the clock back for the others.
for _, source in ipairs(redis.call('ZRANGEBYSCORE', seen, '-inf', '(' .. (now - idle))) do
  for rank = 1, per_source do redis.call('ZREM', times, rank .. '\0' .. source) end
  redis.call('ZREM', seen, source)
end
local old = redis.call('GET', clock)
local count = redis.call('ZCARD', times)
-- One time alone is one article: no clock from it (unless support is 1: the newest time, every date trusted).
if count < math.min(2, support) then return old end
local row
if count < support then row = redis.call('ZRANGE', times, 0, 0, 'WITHSCORES')
else row = redis.call('ZREVRANGE', times, support - 1, support - 1, 'WITHSCORES') end
local value = tonumber(row[2])
if old and tonumber(old) >= value then return old end
local text = string.format('%.3f', value)
redis.call('SET', clock, text)
-- Times far below the clock can never be the support-th newest again.
redis.call('ZREMRANGEBYSCORE', times, '-inf', '(' .. string.format('%.3f', value - horizon))
count = redis.call('ZCARD', times)
if count > keep then redis.call('ZREMRANGEBYRANK', times, 0, count - keep - 1) end
return text
"""

# The most times held: outlets beyond this many (a hostile client inventing
# outlets) only push out the oldest times, which are far below the clock.
KEEP_TIMES = 20_000


def newest_per_source(events, per_source: int) -> list[tuple[str, float]]:
    """Of (outlet, published) pairs, each outlet's ``per_source`` newest: the
    only ones that can change what the clock holds, so a batch sends few."""
    by_source: dict[str, list[float]] = {}
    for source, published in events:
        by_source.setdefault(source, []).append(published)
    return [(source, t) for source, times in by_source.items() for t in sorted(times, reverse=True)[:per_source]]


class StreamClock:
    def __init__(self, client: redis.Redis, keys, settings) -> None:
        self.redis = client
        self.keys = keys
        self.settings = settings
        self._advance = client.register_script(ADVANCE)

    def advance(self, events, client=None):
        """Add dated (outlet, published) events; the clock after them (None
        while nothing dated was ever decided). With ``client`` a pipeline,
        the call is queued on it and its result is the pipeline's."""
        s = self.settings
        args = [s.clock_support, s.clock_per_source, KEEP_TIMES, s.retention_days * DAY, time.time(),
                s.clock_idle_hours * 3600.0]
        for source, published in newest_per_source(events, s.clock_per_source):
            args += [source, repr(float(published))]
        return self._advance(keys=[self.keys.clock_times, self.keys.clock, self.keys.clock_seen], args=args,
                             client=client)

    def read(self) -> float | None:
        return parse(self.redis.get(self.keys.clock))


def parse(value) -> float | None:
    return float(value) if value not in (None, b"", "") else None


def stream_time(clock: float | None, now: float, live_hours: float) -> float:
    """The time an undated article takes: now for a live stream (the clock
    within ``live_hours`` of now, or no clock yet), the clock in a replay.
    Never the wall clock in a replay, where it would land years ahead."""
    if clock is None or clock >= now - live_hours * 3600.0:
        return now
    return clock
