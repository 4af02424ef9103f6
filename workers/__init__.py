"""Storywire's Celery workers: the app factory and the tasks (thin adapters over the engine)."""
