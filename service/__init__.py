"""Storywire's HTTP API: a thin Flask layer over the engine's store and the work queue."""
from __future__ import annotations

from collections.abc import Mapping

from flask import Flask

from . import auth, timing
from .config import load_config
from .errors import register_error_handlers
from .runtime import Runtime


def create_app(config: Mapping | None = None) -> Flask:
    """Build the app. ``config`` overrides the defaults and the environment
    (tests pass their own Redis URL here)."""
    app = Flask(__name__)
    app.config.update(load_config(config))
    app.json.sort_keys = False
    app.extensions["storywire"] = Runtime.from_config(app.config)
    register_error_handlers(app)
    timing.install(app)
    auth.install(app)
    app.after_request(no_sniffing)

    from . import articles, health, metrics, openapi, page, stories
    app.register_blueprint(articles.bp)
    app.register_blueprint(stories.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(page.bp)
    app.register_blueprint(openapi.bp)
    return app


def no_sniffing(response):
    """Every answer, errors too, says ``X-Content-Type-Options: nosniff``: a
    browser must take a JSON body (which quotes article text) as the type it
    is sent as, never guess it is HTML or script."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response
