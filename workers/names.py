"""Task names and queues, importable without Celery so the service can enqueue by name."""

PROCESS_ARTICLE = "storywire.process_article"
# One task for the articles of one batch post: the engine decides them together.
PROCESS_ARTICLES = "storywire.process_articles"
REPAIR_STORIES = "storywire.repair_stories"
REQUEUE_STALE = "storywire.requeue_stale"
QUEUE = "storywire"
