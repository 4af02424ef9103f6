"""One run: every feed read (in parallel), the items not yet sent posted oldest first across all feeds, each
outcome recorded in the state file after every batch, and the progress (stderr) and summary (stdout) lines."""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone

from .api import MAX_REQUEST_BYTES, Api, PostOutcome, batches
from .dates import CHANNEL, NEIGHBOUR, UNDATED
from .errors import ApiStop
from .read import FeedResult, Item, read_feed
from .state import FeedState, ItemState, StateFile, forget_old
from .text import shorten

FETCH_THREADS = 4                     # feeds are read in parallel: waiting on the network, not the CPU
EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE = 0, 1, 2


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Tally:
    """What the API made of the items posted this run."""
    new: int = 0          # stored by this run's requests
    known: int = 0        # the API had them already: nothing was stored again
    unsaid: int = 0       # sent, the answer said neither (an API that does not say)
    rejected: int = 0

    @property
    def sent(self) -> int:
        return self.new + self.known + self.unsaid

    def count(self, outcome: PostOutcome) -> None:
        if outcome.status == "rejected":
            self.rejected += 1
        elif outcome.created is None:
            self.unsaid += 1
        elif outcome.created:
            self.new += 1
        else:
            self.known += 1

    def __str__(self) -> str:
        unsaid = f", {self.unsaid} not said which" if self.unsaid else ""
        return f"{self.sent} sent ({self.new} new, {self.known} already known{unsaid}), {self.rejected} rejected"


def run(args: argparse.Namespace, state_file: StateFile) -> int:
    others = [api for api in state_file.state.apis if api != state_file.api]
    if state_file.adopted_version_1:
        say(f"the state file {state_file.path} names no API (it was written by an earlier importer): what it "
            f"records is taken as sent to {state_file.api}")
    elif state_file.api not in state_file.state.apis and others:
        say(f"the state file {state_file.path} has no record of the API at {state_file.api}: every item is new to "
            f"it (what was sent to {', '.join(map(shorten, others))} is kept apart)")
    feed_states = state_file.feeds   # what was sent to this run's API, by feed
    fetched_at = datetime.now(timezone.utc).replace(microsecond=0)
    feeds = list(dict.fromkeys(args.feeds))  # each feed once, in the order given
    say(f"reading {len(feeds)} feed{'s' * (len(feeds) != 1)}")
    results: dict[str, FeedResult] = {}
    with ThreadPoolExecutor(max_workers=min(FETCH_THREADS, len(feeds))) as pool:
        futures = {pool.submit(read_feed, loc, feed_states.get(loc), args, fetched_at): loc for loc in feeds}
        for done, future in enumerate(as_completed(futures), 1):
            result = future.result()
            results[result.location] = result
            prefix = f"[{done}/{len(feeds)}] {shorten(result.location)}"
            if result.error:
                say(f"[{done}/{len(feeds)}] error: {shorten(result.location)} {result.error}")
                continue
            if result.download is None or result.download.content is None:
                say(f"{prefix}: not modified since the last run")
                continue
            known = feed_states.get(result.location, FeedState()).items
            new = sum(1 for item in result.items if item.key not in known)
            skipped = "".join(f", {n} skipped ({why})" for why, n in sorted(result.skipped.items()))
            say(f"{prefix}: {result.entry_count} items, {new} new to this state file{skipped}")
            borrowed = ", ".join(f"{result.dated[origin]} {what}" for origin, what in (
                (NEIGHBOUR, "dated from a neighbouring item"), (CHANNEL, "dated from the feed's own date"),
                (UNDATED, "undated (posted without published_at: the API assigns its stream's time)"))
                if result.dated.get(origin))
            if borrowed:
                say(f"{prefix}: items without a usable date of their own: {borrowed}")
            if result.warning:
                say(f"{prefix}: warning: {result.warning}")

    pending: list[Item] = []
    for location in feeds:
        result = results[location]
        if result.error or result.download is None or result.download.content is None:
            continue
        feed_state = feed_states.setdefault(location, FeedState())
        for item in result.items:
            known = feed_state.items.get(item.key)
            if known is not None:
                known.seen = fetched_at
            else:
                pending.append(item)
    # Oldest first across all feeds: the engine's stories come out best in publication order (items posted
    # without a date last: the API places them at its stream's current time).
    pending.sort(key=lambda item: item.published_ts)

    api = Api(args.api, args.api_key, args.timeout)
    tally = Tally()
    refusals: dict[str, int] = {}     # rejected items by the API's code
    unsent_feeds: set[str] = set()
    started = time.monotonic()
    start = 0
    for batch in batches(pending, args.batch_size, MAX_REQUEST_BYTES):
        try:
            outcomes = api.post([item.article for item in batch])
        except ApiStop as exc:
            unsent_feeds.update(item.feed for item in pending[start:])
            say(f"error: {exc}")
            break
        busy: list[PostOutcome] = []
        for item, outcome in zip(batch, outcomes):
            if outcome.status == "unsent":  # the API could not take it now (queue_full): next run
                busy.append(outcome)
                unsent_feeds.add(item.feed)
                continue
            feed_states[item.feed].items[item.key] = ItemState(status=outcome.status, seen=fetched_at,
                                                               article=outcome.article, problem=outcome.problem)
            tally.count(outcome)
            if outcome.status == "rejected":
                refusals[outcome.label] = refusals.get(outcome.label, 0) + 1
                say(f"rejected by the API: {item.article['url']} from {shorten(item.feed)}: {outcome.problem}")
        state_file.save()
        rate = (start + len(batch)) / max(time.monotonic() - started, 1e-9)
        waiting = f", {len(busy)} not taken" if busy else ""
        say(f"posted {start + len(batch)}/{len(pending)}: {tally}{waiting}, {rate:.0f}/s")
        start += len(batch)
        if busy:
            # Backpressure: as with a 503 for the whole request, nothing more is sent this run.
            unsent_feeds.update(item.feed for item in pending[start:])
            rest = f" and the {len(pending) - start} not yet sent" if len(pending) > start else ""
            say(f"error: the API could not take {len(busy)} item{'s' * (len(busy) != 1)} now ({busy[0].problem}); "
                f"they{rest} stay unsent and are posted next run")
            break

    for location in feeds:
        result = results[location]
        if result.error or result.download is None:
            continue
        feed_state = feed_states.setdefault(location, FeedState())
        if location not in unsent_feeds:  # a 304 next time must not hide items still waiting to be sent
            feed_state.etag, feed_state.modified = result.download.etag, result.download.modified
        if result.download.content is not None:
            forget_old(feed_state, {item.key for item in result.items}, fetched_at)
    state_file.save()

    failed = [loc for loc in feeds if results[loc].error]
    left = len(pending) - tally.sent - tally.rejected
    common = sorted(refusals.items(), key=lambda pair: (-pair[1], pair[0]))
    why = ", ".join(f"{n} {label}" for label, n in common[:6])
    if len(common) > 6:
        why += f", {sum(n for _, n in common[6:])} for {len(common) - 6} other reasons"
    print(f"feeds: {len(feeds) - len(failed)} read, {len(failed)} failed; articles: {tally}, {left} left for the "
          f"next run, {sum(sum(r.skipped.values()) for r in results.values())} skipped"
          f"{'; rejected: ' + why if why else ''}")
    if failed:
        say(f"{len(failed)} feed{'s' * (len(failed) != 1)} could not be read: {', '.join(map(shorten, failed))}; "
            "see the errors above")
    return EXIT_INCOMPLETE if failed or tally.rejected or left else EXIT_OK
