"""Task names and queues, importable without Celery so the service can enqueue by name."""
import re

from storyengine.errors import ConfigError

PROCESS_ARTICLE = "storywire.process_article"
# One task for the articles of one batch post: the engine decides them together.
PROCESS_ARTICLES = "storywire.process_articles"
REPAIR_STORIES = "storywire.repair_stories"
REQUEUE_STALE = "storywire.requeue_stale"
# The articles' queue by default; STORYWIRE_QUEUE names another, so several
# deployments (partitions, docs/scaling.md) can share one broker.
QUEUE = "storywire"
# A queue name: it goes into a worker's comma-separated --queues and names
# Redis lists on the broker, beside kombu's own keys (which start with "_" or
# "unacked") and, when the broker is the store, Storywire's "{p}:...".
_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def maintenance_queue(queue: str) -> str:
    """Beat's passes (repair, requeue) have a queue of their own that every
    worker also consumes, so a pass never waits (and expires) behind a backlog
    of articles: the articles' queue name with ".maintenance"."""
    return f"{queue}.maintenance"


MAINTENANCE_QUEUE = maintenance_queue(QUEUE)


def queue_name(raw: str, variable: str = "STORYWIRE_QUEUE") -> str:
    """``raw`` if it can name a deployment's article queue, else a ConfigError that says what can."""
    if not _QUEUE_NAME.fullmatch(raw) or raw.startswith("unacked") or raw.endswith(".maintenance"):
        raise ConfigError(f"{variable}={raw[:100]!r} cannot name a queue: use 1 to 100 letters, digits, '.', '_' "
                          "or '-', starting with a letter or digit, not starting with 'unacked' (kombu's keys) nor "
                          "ending with '.maintenance' (beat's queues), for example storywire-en")
    return raw
