# The project's Airflow image: the official Airflow image plus the project's pinned packages and code.
# The tag's Airflow version must equal the apache-airflow pin in requirements.txt, or pip would move
# Airflow inside its own image (tests/unit/test_compose.py checks both this and the Python version).
FROM apache/airflow:3.3.2-python3.11

# The official image wants pip run as its airflow user (not root); constraints.txt pins every
# transitive version so the image gets the same environment the tests ran in.
COPY --chown=airflow:0 requirements.txt constraints.txt /tmp/retrain/
RUN pip install --no-cache-dir -r /tmp/retrain/requirements.txt -c /tmp/retrain/constraints.txt

# AIRFLOW_HOME is /opt/airflow. Airflow puts dags/ and plugins/ on sys.path itself; include/ is a package
# beside them, so /opt/airflow goes on PYTHONPATH for `import include` in DAG files and tasks.
ENV PYTHONPATH=/opt/airflow
COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/

# Mount points of docker-compose.yml's named volumes, made here so that Docker initialises each new
# volume owned by the airflow user instead of root.
RUN mkdir -p /opt/airflow/state /opt/airflow/checkpoints /opt/airflow/data/landing
