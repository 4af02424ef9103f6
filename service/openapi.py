"""The OpenAPI 3.1 document at ``/openapi.json`` and Swagger UI at ``/docs``.

The document is generated, never written by hand. Each view says, with
:func:`documented`, which pydantic models it takes and answers with; the
schemas are pydantic's own (``models_json_schema``), so the request models in
the document are the ones that validate requests; apispec assembles the
document; the paths and methods come from Flask's url_map. Nothing here
validates or wraps a view: validation and the one error envelope stay where
they were, and the tests check real answers against the document instead.

The document describes the app it is served by: the limits are that app's
configuration, and an operation needs the API key exactly when
:mod:`service.auth` would ask for one. Swagger UI's files come from the
``flask-swagger-ui`` wheel, so the page works offline. Both follow the read
policy: public unless ``STORYWIRE_PUBLIC_READS=false``.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from apispec import APISpec
from flask import Blueprint, Flask, current_app
from flask_swagger_ui import get_swaggerui_blueprint
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from . import response_schemas as answers
from .auth import needs_key
from .errors import RETRY_AFTER_SECONDS
from .schemas import ArticleIn, BatchIn, StoriesQuery

log = logging.getLogger("storywire.api")

DOCUMENT_PATH = "/openapi.json"
DOCS_PATH = "/docs"
API_VERSION = "1"
OPENAPI_VERSION = "3.1.0"
_REF_TEMPLATE = "#/components/schemas/{model}"
_IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})
_RULE_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
_EXTENSION = "storywire.openapi"

# Limits that are configuration, not model constants: the views check them
# (or pass them to the validators as context), so the document takes them
# from the app's config. (model, field, JSON Schema keyword) -> config key.
_CONFIG_LIMITS = {
    (ArticleIn, "body", "maxLength"): "MAX_BODY_CHARS",
    (BatchIn, "articles", "maxItems"): "MAX_BATCH_ARTICLES",
    (StoriesQuery, "limit", "maximum"): "MAX_PAGE_SIZE",
}
# A batch's items are validated one by one (a bad item fails alone), so its
# model takes any item; the document shows what each item should be.
_ITEMS_VALIDATED_AS = {(BatchIn, "articles"): ArticleIn}

HEADERS = {
    "Server-Timing": {"description": 'Time spent in the app and Redis round trips: app;dur=<ms>, '
                                     'redis;desc="<n> round trips"',
                      "required": True, "schema": {"type": "string", "pattern": r"^app;dur=[0-9.]+, redis;desc="}},
    "Location": {"description": "Where the resource is", "required": True, "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait before trying again", "required": True,
                    "schema": {"type": "integer", "minimum": 1, "examples": [RETRY_AFTER_SECONDS]}},
    "WWW-Authenticate": {"description": "The Bearer challenge (RFC 6750)", "required": True,
                         "schema": {"type": "string", "pattern": "^Bearer "}},
}
# What each error status means, unless an operation says more; and the headers it carries.
ERROR_TEXT = {
    400: "Malformed request: the envelope's code and message say what to fix",
    401: "An API key is needed (unauthorized): send Authorization: Bearer <key>",
    404: "No such id (not_found)",
    413: "The body is too large (body_too_large)",
    415: "The body is not JSON (unsupported_media_type): send Content-Type: application/json",
    422: "The content is not valid; details lists each field and its problem",
    503: "Redis or the work queue is unreachable (unavailable), or the store is out of memory (store_full): retry after Retry-After seconds",
}
ERROR_HEADERS = {401: ("WWW-Authenticate",), 503: ("Retry-After",)}
SECURITY_SCHEME = "bearerAuth"


@dataclass(frozen=True)
class Reply:
    """A successful (or redirecting) answer: its schema and headers. An answer
    that is not JSON (a page, metrics) names its media type(s) and has no model."""
    description: str
    model: type[BaseModel] | None = None
    headers: tuple[str, ...] = ()
    media_type: str | tuple[str, ...] = "application/json"


@dataclass(frozen=True)
class PathParam:
    description: str
    pattern: str


@dataclass(frozen=True)
class Operation:
    summary: str
    description: str
    tag: str
    replies: Mapping[int, Reply]
    errors: Mapping[int, str]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    path_params: Mapping[str, PathParam] = field(default_factory=dict)


def documented(*, summary: str, tag: str, replies: Mapping[int, Reply], errors: Mapping[int, str | None] = (),
               description: str = "", body: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
               path_params: Mapping[str, PathParam] | None = None) -> Callable:
    """Describe a view for the document. Only marks the view (no wrapper), so it
    behaves and is called exactly as before. ``errors`` maps a status to what it
    means here; None takes the usual text (``ERROR_TEXT``)."""
    texts = {}
    for status, text in dict(errors).items():
        if not (text or status in ERROR_TEXT):
            raise ValueError(f"say what status {status} means for {summary!r}: no usual text for it")
        texts[status] = text or ERROR_TEXT[status]
    operation = Operation(summary=summary, description=description, tag=tag, replies=dict(replies), errors=texts,
                          body=body, query=query, path_params=dict(path_params or {}))

    def mark(view: Callable) -> Callable:
        view.openapi_operation = operation
        return view
    return mark


def openapi_path(rule: str) -> str:
    """A Flask rule as an OpenAPI path template: /v1/stories/<story_id> -> /v1/stories/{story_id}."""
    return _RULE_ARGUMENT.sub(r"{\1}", rule)


def is_documentation(endpoint: str) -> bool:
    """The document's and the docs' own routes, and static files: not part of the API."""
    return endpoint == "static" or endpoint == bp.name or endpoint.startswith(f"{bp.name}.")


def routes(app: Flask) -> list[tuple[str, str, str, Operation | None]]:
    """(Flask rule, method, endpoint, operation or None if undocumented) for every API route."""
    found = []
    for rule in app.url_map.iter_rules():
        if is_documentation(rule.endpoint):
            continue
        operation = getattr(app.view_functions[rule.endpoint], "openapi_operation", None)
        for method in sorted((rule.methods or set()) - _IGNORED_METHODS):
            found.append((rule.rule, method, rule.endpoint, operation))
    return found


# ------------------------------------------------------------------ schemas
def _schemas(app: Flask, operations: list[Operation]) -> tuple[dict[str, dict], dict[tuple[type, str], str]]:
    """Every model's JSON Schema (pydantic's), named as components; and each (model, mode)'s $ref."""
    wanted: dict[tuple[type[BaseModel], str], None] = {(answers.ErrorEnvelope, "serialization"): None}
    for operation in operations:
        for model in (operation.body, operation.query):
            if model is not None:
                wanted[(model, "validation")] = None
        for (model, _), item_model in _ITEMS_VALIDATED_AS.items():
            if operation.body is model:
                wanted[(item_model, "validation")] = None
        for reply in operation.replies.values():
            if reply.model is not None:
                wanted[(reply.model, "serialization")] = None
    refs_by_key, top = models_json_schema(list(wanted), ref_template=_REF_TEMPLATE)
    definitions = top.get("$defs", {})
    refs = {key: value["$ref"] for key, value in refs_by_key.items()}
    names = {model: ref.rsplit("/", 1)[1] for (model, mode), ref in refs.items() if mode == "validation"}
    for (model, field_name, keyword), config_key in _CONFIG_LIMITS.items():
        if model in names:
            definitions[names[model]]["properties"][field_name][keyword] = int(app.config[config_key])
    for (model, field_name), item_model in _ITEMS_VALIDATED_AS.items():
        if model in names:
            definitions[names[model]]["properties"][field_name]["items"] = {"$ref": refs[(item_model, "validation")]}
    return definitions, refs


def _without_null(schema: dict) -> dict:
    """A query parameter is present or absent, never null: keep the non-null branch."""
    branches = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    if len(branches) != 1:
        return schema
    merged = {k: v for k, v in schema.items() if k not in ("anyOf", "default") or (k == "default" and v is not None)}
    merged.update(branches[0])
    return merged


def _query_parameters(app: Flask, model: type[BaseModel], definition: dict) -> list[dict]:
    parameters = []
    required = set(definition.get("required", []))
    for name, schema in definition["properties"].items():
        schema = _without_null(dict(schema))
        schema.pop("title", None)
        description = schema.pop("description", "")
        if model is StoriesQuery and name == "limit":
            description += (f"; default {app.config['DEFAULT_PAGE_SIZE']}, at most {app.config['MAX_PAGE_SIZE']}")
        parameters.append({"name": name, "in": "query", "required": name in required, "description": description,
                           "schema": schema})
    return parameters


# ------------------------------------------------------------------ operations
def _response(reply: Reply, refs: dict) -> dict:
    response: dict[str, Any] = {"description": reply.description,
                                "headers": {name: name for name in ("Server-Timing", *reply.headers)}}
    media_types = (reply.media_type,) if isinstance(reply.media_type, str) else reply.media_type
    if reply.model is not None:
        response["content"] = {media_type: {"schema": {"$ref": refs[(reply.model, "serialization")]}}
                               for media_type in media_types}
    elif media_types != ("application/json",):
        response["content"] = {media_type: {"schema": {"type": "string"}} for media_type in media_types}
    return response


def _operation(app: Flask, rule: str, method: str, operation_id: str, operation: Operation, definitions: dict,
               refs: dict) -> dict:
    key_needed = needs_key(app.config, rule, method)
    parameters = [{"name": name, "in": "path", "required": True, "description": param.description,
                   "schema": {"type": "string", "pattern": param.pattern}}
                  for name, param in operation.path_params.items()]
    if operation.query is not None:
        ref = refs[(operation.query, "validation")]
        parameters += _query_parameters(app, operation.query, definitions[ref.rsplit("/", 1)[1]])
    doc: dict[str, Any] = {"operationId": operation_id, "summary": operation.summary, "tags": [operation.tag]}
    if operation.description:
        doc["description"] = operation.description
    if parameters:
        doc["parameters"] = parameters
    if operation.body is not None:
        doc["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": {"$ref": refs[(operation.body, "validation")]}}}}
    responses = {status: _response(reply, refs) for status, reply in operation.replies.items()}
    errors = dict(operation.errors)
    if key_needed:
        doc["security"] = [{SECURITY_SCHEME: []}]
        errors.setdefault(401, ERROR_TEXT[401])
    for status, text in sorted(errors.items()):
        responses[status] = _response(Reply(text, answers.ErrorEnvelope, ERROR_HEADERS.get(status, ())), refs)
    doc["responses"] = dict(sorted(responses.items()))
    return doc


def _operation_ids(operations: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The view's name (list_stories), which client generators turn into method names; the
    blueprint, and the method for a view with several, are added only where names would clash."""
    def name(endpoint: str, method: str, level: int) -> str:
        parts = ([endpoint.rsplit(".", 1)[-1]], [endpoint.replace(".", "_")],
                 [endpoint.replace(".", "_"), method.lower()])[level]
        return "_".join(parts)
    ids = {}
    for endpoint, method in operations:
        for level in range(3):
            candidate = name(endpoint, method, level)
            if sum(name(e, m, level) == candidate for e, m in operations) == 1:
                break
        ids[(endpoint, method)] = candidate
    return ids


def build_document(app: Flask) -> dict:
    """The OpenAPI document of this app, as it is configured."""
    found = routes(app)
    for rule, method, endpoint, operation in found:
        if operation is None:
            log.warning("route %s %s (%s) is not in the OpenAPI document: describe its view with "
                        "service.openapi.documented", method, rule, endpoint)
    described = [(rule, method, endpoint, operation) for rule, method, endpoint, operation in found if operation]
    definitions, refs = _schemas(app, [operation for *_, operation in described])
    spec = APISpec(title="Storywire", version=API_VERSION, openapi_version=OPENAPI_VERSION, info={
        "description": "News articles in, stories out: copies of an article are folded under its canonical "
                       "article, and outlets' coverage of one event is grouped into a story. Every error is one "
                       "JSON envelope, {\"error\": {\"status\", \"code\", \"message\", \"details\"}}, whose "
                       "message says what to do. Every answer carries a Server-Timing header."})
    for name, schema in definitions.items():
        spec.components.schema(name, schema)
    for name, header in HEADERS.items():
        spec.components.header(name, header)
    spec.components.security_scheme(SECURITY_SCHEME, {
        "type": "http", "scheme": "bearer",
        "description": "STORYWIRE_API_KEY: writes need it when it is set, reads too with "
                       "STORYWIRE_PUBLIC_READS=false; /healthz and /readyz never do"})
    tags = sorted({operation.tag for *_, operation in described})
    for tag in tags:
        spec.tag({"name": tag})
    paths: dict[str, dict[str, dict]] = {}
    ids = _operation_ids([(endpoint, method) for _, method, endpoint, _ in described])
    for rule, method, endpoint, operation in described:
        paths.setdefault(openapi_path(rule), {})[method.lower()] = _operation(
            app, rule, method, ids[(endpoint, method)], operation, definitions, refs)
    for path, operations in sorted(paths.items()):
        spec.path(path=path, operations=operations)
    return spec.to_dict()


# ------------------------------------------------------------------ serving
bp = Blueprint("openapi", __name__)
bp.register_blueprint(get_swaggerui_blueprint(DOCS_PATH, DOCUMENT_PATH, blueprint_name="docs", config={
    "app_name": "Storywire API",
    "layout": "BaseLayout",  # no top bar: it offers to load other documents
    "validatorUrl": None,    # Swagger UI would otherwise send the document to validator.swagger.io
    # Set here so the page never echoes the request's Host header into its script.
    "oauth2RedirectUrl": f"{DOCS_PATH}/oauth2-redirect.html",
}))


@bp.get(DOCUMENT_PATH)
def document():
    """Built once per app, at its first request for it (every blueprint is registered by then)."""
    cached = current_app.extensions.get(_EXTENSION)
    if cached is None:
        cached = current_app.extensions[_EXTENSION] = build_document(current_app)
    return cached
