"""The Airflow Assets the DAGs share: the observations topic, and rebuild requests. Imported by DAG files, so it
stays light."""

from __future__ import annotations

from airflow.sdk import Asset

from include.settings import Settings, get_settings


def observations_asset(settings: Settings | None = None) -> Asset:
    """The observations topic as an Asset, ``kafka://<first bootstrap server>/<topic>`` (the provider's URI form).

    Its name is its URI: a fixed name with a URI that follows the configuration would make Airflow see two
    assets under one name (the older one inactive) whenever the topic or the brokers change.
    """
    settings = settings or get_settings()
    server = settings.kafka_bootstrap_servers.split(",")[0].strip()
    return Asset(uri=f"kafka://{server}/{settings.topic}")


def rebuild_asset(settings: Settings | None = None) -> Asset:
    """Requests for a rebuild of the observations topic (``retrain://rebuild/<topic>``): the ingest DAG updates it when
    a file waits for a rebuild or a rebuild is running (it has new files to follow), and ``rebuild_model`` runs on it.
    The rebuild itself is recorded in the database (:mod:`include.rebuild.records`); the event only wakes the DAG."""
    settings = settings or get_settings()
    return Asset(uri=f"retrain://rebuild/{settings.topic}")
