"""Connect arguments for Airflow's own SQLite metadata database in local runs (``make run``, tests).

SQLite allows one writer; with the scheduler, the DAG processor and a CLI backfill writing at once, the
default 5-second busy timeout surfaces as "database is locked". Waiting longer is enough at this scale.
Referenced by ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS`` in infra/airflow/env.sh.
"""

CONNECT_ARGS = {"timeout": 120}
