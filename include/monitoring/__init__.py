"""What the Model accuracy page and the report show.

Owns: read-only queries over the history database (accuracy curves, runs, the ingest ledger), downsampling of long
curves, consumer lag from the broker, and the PNG/markdown report. Never writes a row, never migrates a database,
never imports Airflow or TensorFlow at top level (the UI plugin imports it in every Airflow process).
"""
