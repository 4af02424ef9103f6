"""Task names and queues, importable without Celery so the service can enqueue by name."""

PROCESS_ARTICLE = "storywire.process_article"
# One task for the articles of one batch post: the engine decides them together.
PROCESS_ARTICLES = "storywire.process_articles"
REPAIR_STORIES = "storywire.repair_stories"
REQUEUE_STALE = "storywire.requeue_stale"
QUEUE = "storywire"
# Beat's passes (repair, requeue) have a queue of their own that every worker
# also consumes, so a pass never waits (and expires) behind a backlog of articles.
MAINTENANCE_QUEUE = "storywire.maintenance"
