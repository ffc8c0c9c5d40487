"""The model lifecycle on the Model accuracy page: versions and alerts to read, promote and rollback to act.

Reading needs what every route of the app needs (read DAG runs). The two actions are the plugin's only writes, and
each is allowed only when all of these hold:

* the user may edit the training DAG: the auth manager's ``is_authorized_dag(method="PUT")`` for ``train_model``
  (Airflow's own ``requires_access_dag`` dependency): a viewer gets 403;
* the request carries ``X-Requested-By`` (a header a cross-site form cannot send, and a cross-site script cannot
  send without a CORS preflight that this app never answers);
* it comes from this site: ``Origin``, when sent, is the API server's own origin (or ``[api] base_url``'s), and
  ``Sec-Fetch-Site``, when sent, is ``same-origin``; a request with neither (not a browser) must authenticate with
  an ``Authorization`` header, not the session cookie.

The change is :func:`include.lifecycle.promotion.promote` / ``rollback``: one transaction with its audit row, which
records the user's name and the reason given. The database is never migrated from here.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from include import monitoring
from include.lifecycle.promotion import promote, rollback
from include.lifecycle.registry import LifecycleError, Registry
from include.settings import get_settings

#: The DAG whose edit permission allows changing the champion.
TRAIN_DAG_ID = "train_model"
CSRF_HEADER = "X-Requested-By"
NO_CONTROL = r"^[^\x00-\x1f\x7f]+$"

router = APIRouter()
may_edit_training = requires_access_dag(method="PUT", param_dag_id=TRAIN_DAG_ID)

ModelPath = Annotated[str, PathParam(min_length=1, max_length=128, pattern=NO_CONTROL)]
ModelQuery = Annotated[str, Query(min_length=1, max_length=128, pattern=NO_CONTROL, description="model name")]


class PromoteRequest(BaseModel):
    version: int = Field(ge=1, description="the version to serve")
    reason: str = Field(min_length=3, max_length=500, pattern=NO_CONTROL, description="why (recorded)")


class RollbackRequest(BaseModel):
    reason: str = Field(min_length=3, max_length=500, pattern=NO_CONTROL, description="why (recorded)")
    to_version: int | None = Field(None, ge=1, description="default: the previous champion")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def same_site_only(request: Request) -> None:
    """Refuse (403) a request that could have been forged by another site (see the module docstring)."""
    if not request.headers.get(CSRF_HEADER):
        raise HTTPException(403, f"refused: the {CSRF_HEADER} header is missing (requests from other sites are refused)")
    origin = request.headers.get("origin")
    fetch_site = request.headers.get("sec-fetch-site")
    if origin is not None:
        from airflow.configuration import conf

        allowed = {_origin(str(request.base_url))}
        base_url = conf.get("api", "base_url", fallback=None)
        if base_url:
            allowed.add(_origin(base_url))
        if origin.lower() not in allowed:
            raise HTTPException(403, "refused: the request comes from another site (Origin)")
    if fetch_site is not None and fetch_site != "same-origin":
        raise HTTPException(403, "refused: the request comes from another site (Sec-Fetch-Site)")
    if origin is None and fetch_site is None and not request.headers.get("authorization"):
        raise HTTPException(403, "refused: a request without Origin must authenticate with an Authorization header")


def _sessions():
    return monitoring.sessions_for(get_settings().db_url)


def _registry() -> Registry:
    return Registry(get_settings(), migrate=False)


def _can_edit(user) -> bool:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.models.dag import DagModel

    details = DagDetails(id=TRAIN_DAG_ID, team_name=DagModel.get_team_name(TRAIN_DAG_ID))
    return bool(get_auth_manager().is_authorized_dag(method="PUT", details=details, user=user))


@router.get("/api/versions")
def versions(user: GetUserDep, model: ModelQuery = "default") -> dict:
    """The model's versions (champion marked, decisions), its audit trail, and whether this user may change it."""
    return {**monitoring.versions_view(_sessions(), model), "can_edit": _can_edit(user)}


@router.get("/api/alerts")
def alerts(model: ModelQuery = "default", limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
    """The model's alerts, newest first, notified or pending."""
    return monitoring.alerts_view(_sessions(), model, limit=limit)


@router.post("/api/models/{model}/promote", dependencies=[Depends(may_edit_training), Depends(same_site_only)])
def promote_version(model: ModelPath, body: PromoteRequest, user: GetUserDep) -> dict:
    """Serve ``body.version`` (recorded: the user, the reason)."""
    try:
        info = promote(_registry(), model, body.version, actor=user.get_name(), reason=body.reason.strip())
    except LifecycleError as exc:
        raise HTTPException(409, str(exc)) from None
    return {"model_name": model, "champion": info.version, "actor": user.get_name()}


@router.post("/api/models/{model}/rollback", dependencies=[Depends(may_edit_training), Depends(same_site_only)])
def rollback_version(model: ModelPath, body: RollbackRequest, user: GetUserDep) -> dict:
    """Serve the previous champion again, or ``body.to_version`` (recorded: the user, the reason)."""
    try:
        info = rollback(_registry(), model, actor=user.get_name(), reason=body.reason.strip(),
                        to_version=body.to_version)
    except LifecycleError as exc:
        raise HTTPException(409, str(exc)) from None
    return {"model_name": model, "champion": info.version, "actor": user.get_name()}
