-- The project's training-history database (RETRAIN_DB_URL in docker-compose.yml), on the same server as
-- Airflow's metadata database `airflow`. The postgres image runs this once, as POSTGRES_USER, when its
-- data volume is first initialised; an existing volume is left as it is (`docker compose down -v` resets it).
CREATE DATABASE retrain;
