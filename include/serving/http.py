"""The HTTP scorer: TensorFlow Serving's REST API over the champion (FastAPI app, run by uvicorn).

Routes (``<name>`` is a model name the server was started for):

* ``POST /v1/models/<name>:predict`` and ``POST /v1/models/<name>/versions/<v>:predict`` with
  ``{"instances": [{"observed_at": "...", "shop_id": 12, ...}, ...]}`` (objects keyed by column name, the label
  optional) answer ``{"predictions": [{"probability": 0.8312, "label": 1}, ...]}``, one object per instance in
  order: TF Serving's row format for a signature with two named outputs (``probability`` of the positive label,
  ``label`` = probability >= 0.5).
* ``GET /v1/models/<name>`` and ``GET /v1/models/<name>/versions/<v>``: TF Serving's status shape
  (``model_version_status``: version, state, status).

Errors are TF Serving's ``{"error": "..."}``: 400 when any instance is refused (the request as a whole, as TF Serving
does; the message names each refused instance's index and the reason, the one value parser's, as ingest gives it),
404 for an unknown model, version or route, 413 for a body over 64 MiB, 503 before a model name has a champion.
Every answer a model gave has the header ``X-Model-Version``. Scoring runs on the event loop (a few ms for 1,000
rows: decoding is vectorised and the answer is formatted, not built as objects); loading a version never does
(:mod:`include.serving.follower`, :mod:`include.serving.servables`). This module never changes the registry.
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import sys
from contextlib import asynccontextmanager
from typing import Any, Mapping

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from include.lifecycle.registry import LifecycleError
from include.schema import CsvSchema
from include.serving.model import LoadedModel
from include.serving.requests import decode_requests, instance_rows
from include.serving.servables import Servable

log = logging.getLogger(__name__)

VERSION_HEADER = "X-Model-Version"
LINEAGE_HEADER = "X-Model-Lineage"  # the model name of the version's lineage (``default.g2`` after a rebuild)
MAX_LISTED_ERRORS = 10
MAX_BODY_BYTES = 64 << 20  # ~300,000 instances of the drone schema; a bigger body is refused (413), never held


class ApiError(Exception):
    """An answer in TF Serving's error shape: ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, version: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.version = status, message, version


def _headers(version: int | None) -> dict[str, str] | None:
    return None if version is None else {VERSION_HEADER: str(version)}


def _error_response(status: int, message: str, version: int | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=_headers(version))


def _version_number(name: str, text: str) -> int:
    try:
        version = int(text)
    except ValueError:
        version = -1
    if version < 1:
        raise ApiError(404, f"Servable not found for request: Specific({name}, {text})")
    return version


def score(schema: CsvSchema, model: LoadedModel, body: bytes) -> Response:
    """Answer a predict request's body with ``model``: the predictions, or 400 naming every refused instance."""
    instances = _instances(body, model.version)
    rows, refused = instance_rows(schema, instances)
    decoded = decode_requests(schema, rows)
    if refused or decoded.errors:
        reasons = dict(refused)
        for index, reason in decoded.errors:
            reasons.setdefault(index, reason)
        raise ApiError(400, _refusal(reasons, len(instances)), model.version)
    probabilities = model.predict(decoded.x)
    labels = (probabilities >= 0.5).tolist()
    items = ",".join([f'{{"probability":{p:.6f},"label":{int(k)}}}' for p, k in zip(probabilities.tolist(), labels)])
    headers = {**_headers(model.version), **({LINEAGE_HEADER: model.model_name} if model.model_name else {})}
    return Response(f'{{"predictions":[{items}]}}', media_type="application/json", headers=headers)


async def _body(request: Request, version: int) -> bytes:
    """The request body, refused with 413 once it passes :data:`MAX_BODY_BYTES` (declared or streamed)."""
    too_big = ApiError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes: send fewer instances per "
                            "request", version)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def _instances(body: bytes, version: int) -> list[Any]:
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise ApiError(400, f"the request body is not JSON: {exc}", version) from None
    instances = payload.get("instances") if isinstance(payload, dict) else None
    if not isinstance(instances, list):
        raise ApiError(400, 'the request body must be {"instances": [...]}: a list of objects keyed by column name',
                       version)
    return instances


def _refusal(reasons: Mapping[int, str], total: int) -> str:
    listed = []
    for index in sorted(reasons)[:MAX_LISTED_ERRORS]:
        reason = reasons[index]
        listed.append(reason if reason.startswith(f"instance {index} ") else f"instance {index}: {reason}")
    more = len(reasons) - len(listed)
    tail = f"; and {more} more" if more else ""
    return f"{len(reasons)} of {total} instances refused, nothing scored: " + "; ".join(listed) + tail


def _status_entry(version: int, state: str = "AVAILABLE", message: str = "") -> dict[str, Any]:
    return {"version": str(version), "state": state,
            "status": {"error_code": "OK" if not message else "NOT_FOUND", "error_message": message}}


def create_app(servables: Mapping[str, Servable], schema: CsvSchema) -> FastAPI:
    """The app serving ``servables`` (model name -> :class:`Servable`); their followers run during its lifespan."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        for servable in servables.values():
            await run_in_threadpool(servable.start)
        # TensorFlow and Keras leave ~400,000 long-lived Python objects; a full garbage collection walks them all
        # (~250 ms, every thread stopped) and comes when a model load adds many objects: during a promotion.
        # Frozen, they are never walked again; later versions stay collectable (only this first one stays).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            for servable in servables.values():
                servable.stop()

    app = FastAPI(title="drone retrain scorer", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc.status, exc.message, exc.version)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error_response(exc.status_code, str(exc.detail))

    _predict_routes(app, servables, schema)
    _status_routes(app, servables)
    return app


def _servable(servables: Mapping[str, Servable], name: str, request_text: str) -> Servable:
    servable = servables.get(name)
    if servable is None:
        raise ApiError(404, f"Servable not found for request: {request_text}")
    return servable


def _predict_routes(app: FastAPI, servables: Mapping[str, Servable], schema: CsvSchema) -> None:
    @app.post("/v1/models/{name}:predict")
    async def predict_champion(name: str, request: Request) -> Response:
        model = _servable(servables, name, f"Latest({name})").champion()
        if model is None:
            raise ApiError(503, f"model {name!r} has no champion yet: train it first")
        return score(schema, model, await _body(request, model.version))

    @app.post("/v1/models/{name}/versions/{version}:predict")
    async def predict_version(name: str, version: str, request: Request) -> Response:
        servable = _servable(servables, name, f"Specific({name}, {version})")
        number = _version_number(name, version)
        try:
            model = await run_in_threadpool(servable.version, number)
        except LifecycleError as exc:
            raise ApiError(404, f"Servable not found for request: Specific({name}, {number}): {exc}") from None
        return score(schema, model, await _body(request, model.version))


def _status_routes(app: FastAPI, servables: Mapping[str, Servable]) -> None:
    @app.get("/v1/models/{name}")
    async def model_status(name: str) -> JSONResponse:
        loaded = _servable(servables, name, f"Latest({name})").loaded_versions()
        if not loaded:
            raise ApiError(404, f"Could not find any versions of model {name}")
        return JSONResponse({"model_version_status": [_status_entry(v) for v in loaded]},
                            headers=_headers(loaded[0]))

    @app.get("/v1/models/{name}/versions/{version}")
    async def version_status(name: str, version: str) -> JSONResponse:
        servable = _servable(servables, name, f"Specific({name}, {version})")
        number = _version_number(name, version)
        try:
            lineage = await run_in_threadpool(servable.lineage)
            info = await run_in_threadpool(servable.registry.get, lineage, number)
        except LifecycleError:
            raise ApiError(404, f"Servable not found for request: Specific({name}, {number})") from None
        entry = _status_entry(number) if info.on_disk else _status_entry(number, "END", "its files were removed")
        return JSONResponse({"model_version_status": [entry]}, headers=_headers(number))


def run_server(settings: Any, model_names: list[str], *, host: str | None = None, port: int | None = None,
               interval_s: float = 0.2, access_log: bool = False) -> None:
    """Serve ``model_names`` on ``host:port`` (default RETRAIN_SERVE_HOST / RETRAIN_SERVE_PORT) until SIGTERM/SIGINT.

    Shutdown is uvicorn's graceful one: it stops accepting, lets requests in flight finish (up to 10 s), then
    stops following the champions; then this returns (exit code 0) instead of uvicorn re-raising the signal.

    Raises:
        HistoryNotReady: The history database does not exist yet.
        SchemaError: The configured schema is invalid.
    """
    import uvicorn

    from include.lifecycle.registry import Registry
    from include.schema import load_schema
    from include.training.model import configure_tensorflow

    configure_tensorflow()
    # A version loading in the follower's thread holds the GIL in 5 ms slices by default, and a request needs it
    # several times: 1 ms slices keep the tail latency of requests answered during a promotion low.
    sys.setswitchinterval(0.001)
    schema = load_schema(settings.schema_name)
    registry = Registry(settings, migrate=False)
    servables = {name: Servable(registry, name, schema.id, interval_s=interval_s) for name in model_names}
    config = uvicorn.Config(create_app(servables, schema), host=host or settings.serve_host,
                            port=port or settings.serve_port, loop="uvloop", http="httptools",
                            access_log=access_log, log_level="info", timeout_graceful_shutdown=10)
    # uvicorn installs its own handlers while it runs and, once shut down, re-raises the signal it caught into the
    # handlers found before it: these, so a stopped server ends normally rather than killed by its signal.
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        uvicorn.Server(config).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stopped(signum: int, _frame: Any) -> None:
    log.info("stopped by signal %d after a graceful shutdown", signum)
