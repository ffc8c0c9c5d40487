"""The Airflow Assets the DAGs share: the observations topic. Imported by DAG files, so it stays light."""

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
