"""The entry point the Celery and Flower commands load: ``celery -A workers.main worker``.

Like Flask's ``wsgi`` modules, this is the one place that builds the app from
the environment at import time, because the Celery command line needs an app
object to import.
"""
from .app import create_celery

app = create_celery()
