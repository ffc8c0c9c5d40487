"""The Model accuracy plugin's FastAPI app: the page, its static files and a small JSON API.

Airflow mounts it at ``/model-accuracy`` but does not authenticate plugin apps, so this app does: every route
depends on Airflow's own security dependency, ``requires_access_dag("GET", DagAccessEntity.RUN)``, which
resolves the user with ``airflow.api_fastapi.core_api.security.get_user`` (an ``Authorization: Bearer`` JWT,
else the UI's ``_token`` cookie, validated by the configured auth manager) and then asks the auth manager
whether that user may read DAG runs (of ``dag_id`` when the request names one). Anonymous requests get 401,
bad tokens 403. The dependency is set on the app, so no route can be added without it; the OpenAPI and docs
routes (which would not get it) are off, and static files are served by a route of this app, not by a
``StaticFiles`` mount (a mount would not get it either).

The queries live in :mod:`include.monitoring`; this module only validates parameters and returns JSON. The model
lifecycle's routes (versions, alerts, and the only writes: promote and rollback, with their own authorization and
forgery checks) are in :mod:`model_accuracy.lifecycle_api`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag
from include import monitoring
from include.history.db import HistoryNotReady
from include.settings import get_settings
from model_accuracy.lifecycle_api import router as lifecycle_router

HERE = Path(__file__).resolve().parent
INDEX_HTML = HERE / "templates" / "index.html"
STATIC_DIR = HERE / "static"
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".md": "text/markdown"}
# The only files served: what ships in static/, looked up by name (no path is ever joined from a request).
STATIC_FILES = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file() and p.suffix in MEDIA_TYPES}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'self'; base-uri 'self'",
    "Referrer-Policy": "same-origin",
}

#: The app-wide dependency. A module attribute so tests can override it (``app.dependency_overrides``).
authorize = requires_access_dag(method="GET", access_entity=DagAccessEntity.RUN)

app = FastAPI(
    title="Model accuracy",
    description="Streaming retraining monitor: accuracy history, training runs, consumer lag, ingest ledger.",
    dependencies=[Depends(authorize)],
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)

# Text limits: Airflow's dag_id alphabet; run ids and model names are free text without control characters.
NO_CONTROL = r"^[^\x00-\x1f\x7f]+$"
ModelName = Annotated[str, Query(min_length=1, max_length=128, pattern=NO_CONTROL, description="model name")]
OptionalModel = Annotated[str | None, Query(min_length=1, max_length=128, pattern=NO_CONTROL)]
DagId = Annotated[str | None, Query(min_length=1, max_length=250, pattern=r"^[A-Za-z0-9_.\-]+$")]
DagRunId = Annotated[str | None, Query(min_length=1, max_length=250, pattern=NO_CONTROL)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]


def _sessions():
    return monitoring.sessions_for(get_settings().db_url)


def _live_settings():
    """The settings of the topic's live generation (its ledger, its lag): ``RETRAIN_TOPIC`` until a rebuild switched."""
    from include.lifecycle.generations import generation_settings, live_generation

    settings = get_settings()
    with _sessions()() as session:
        return generation_settings(settings, live_generation(session, settings.topic))


app.include_router(lifecycle_router)


@app.exception_handler(SQLAlchemyError)
async def _database_unavailable(request: Request, exc: SQLAlchemyError) -> JSONResponse:
    return JSONResponse({"detail": f"history database unavailable: {type(exc).__name__}"}, status_code=503)


@app.exception_handler(HistoryNotReady)
async def _database_not_ready(request: Request, exc: HistoryNotReady) -> JSONResponse:
    """The plugin only reads: until a writer has created the database, say what creates it."""
    return JSONResponse({"detail": str(exc)}, status_code=503)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse | HTMLResponse:
    """JSON as usual; for the page itself a short HTML answer that links to Airflow's login."""
    if exc.status_code == 401 and request.scope.get("endpoint") is page:
        body = (
            "<!doctype html><meta charset='utf-8'><title>Model accuracy</title>"
            "<p>Please <a href='../auth/login?next=../model-accuracy/' target='_top'>log in to Airflow</a> "
            "to see the Model accuracy page.</p>"
        )
        return HTMLResponse(body, status_code=exc.status_code, headers=SECURITY_HEADERS)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


@app.get("/", response_class=HTMLResponse, include_in_schema=False)
def page() -> HTMLResponse:
    """The Model accuracy page (reads ``model``, ``x``, ``dag_id`` and ``dag_run_id`` from its URL)."""
    return HTMLResponse(INDEX_HTML.read_text(encoding="utf-8"), headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


@app.get("/static/{name}", include_in_schema=False)
def static(name: Annotated[str, PathParam(max_length=100)]) -> FileResponse:
    path = STATIC_FILES.get(name)
    if path is None:
        raise HTTPException(status_code=404, detail="not found")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix],
                        headers={**SECURITY_HEADERS, "Cache-Control": "private, max-age=3600"})


@app.get("/api/models")
def models() -> dict:
    """Models with mini-batch history."""
    return {"models": monitoring.list_models(_sessions())}


@app.get("/api/accuracy")
def accuracy(
    model: ModelName = "default",
    x: Annotated[Literal["records", "event_time"], Query(description="x axis")] = "records",
    max_points: Annotated[int, Query(ge=10, le=5000)] = monitoring.DEFAULT_MAX_POINTS,
    dag_id: DagId = None,
    dag_run_id: DagRunId = None,
) -> dict:
    """Downsampled window and prequential accuracy, runs, baseline, Bayes-optimal accuracy and drift events."""
    settings = _live_settings()
    return monitoring.accuracy_curve(
        _sessions(), model_name=model, x_axis=x, max_points=max_points, dag_id=dag_id, dag_run_id=dag_run_id,
        topic=settings.topic,
    )


@app.get("/api/runs")
def runs(
    model: OptionalModel = None,
    dag_id: DagId = None,
    dag_run_id: DagRunId = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict:
    """Training runs, newest first."""
    return monitoring.list_runs(_sessions(), model_name=model, dag_id=dag_id, dag_run_id=dag_run_id,
                                limit=limit, offset=offset)


@app.get("/api/ingest")
def ingest(limit: Limit = 100, offset: Offset = 0) -> dict:
    """The ingest ledger of the project's topic (its live generation), newest first."""
    return monitoring.ingest_ledger(_sessions(), topic=_live_settings().topic, limit=limit, offset=offset)


@app.get("/api/kafka")
def kafka() -> dict:
    """Consumer lag per partition and the dead-letter count; ``available: false`` within 3 s if Kafka is away."""
    return monitoring.kafka_status(_live_settings(), timeout=monitoring.KAFKA_TIMEOUT_S)


@app.get("/api/generations")
def generations(model: ModelName = "default") -> dict:
    """The topic's generations (the live one, the switch), its rebuilds with their progress and decisions, and the
    newest rebuild's accuracy curve beside the live lineage's."""
    return monitoring.generations_view(_sessions(), get_settings().topic, model)
