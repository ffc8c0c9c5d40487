"""Model accuracy: an Airflow 3 UI plugin for the streaming retraining project.

A FastAPI app mounted at ``/model-accuracy`` (page, static files, JSON API; every route requires an
authenticated Airflow user allowed to read DAG runs: see ``app.py``; its only writes, promote and rollback, also
need permission to edit the training DAG and a same-origin request: see ``lifecycle_api.py``) and two external views that show it in
the Airflow UI: a navigation entry, and a tab on every DAG run that opens that run's slice of the chart.

Airflow loads this file as a plugin module by itself (``.airflowignore`` keeps it from loading ``app.py``
the same way), so imports here are absolute: the plugins folder is on ``sys.path``.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from model_accuracy.app import app as model_accuracy_app

URL_PREFIX = "/model-accuracy"


class ModelAccuracyPlugin(AirflowPlugin):
    name = "model_accuracy"
    fastapi_apps = [{"app": model_accuracy_app, "url_prefix": URL_PREFIX, "name": "Model accuracy"}]
    # hrefs are relative to the UI's <base href>, so they follow the API server's base URL.
    external_views = [
        {
            "name": "Accuracy",  # the navigation bar has room for about ten characters
            "href": "model-accuracy/",
            "icon": "model-accuracy/static/icon.svg",
            "url_route": "model-accuracy",
            "destination": "nav",
        },
        {
            "name": "Model accuracy",
            "href": "model-accuracy/?dag_id={DAG_ID}&dag_run_id={RUN_ID}",
            "icon": "model-accuracy/static/icon.svg",
            "url_route": "model-accuracy-run",
            "destination": "dag_run",
        },
    ]
