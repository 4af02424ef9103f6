"""Task names and queues, importable without Celery so the service can enqueue by name."""

PROCESS_ARTICLE = "storywire.process_article"
REPAIR_STORIES = "storywire.repair_stories"
REQUEUE_STALE = "storywire.requeue_stale"
QUEUE = "storywire"
