"""Landed CSV files into Kafka: every valid row exactly once, every bad row set aside with its reason.

Owns: the landing folder's conventions, CSV validation against the schema, the one Kafka transaction per file with
its commit marker, the ingest ledger and the quarantine. Never trains, never decides from the wall clock (a run's
files come from the dates in their names and its data interval), and never constructs a Kafka client itself
(:mod:`include.kafka.clients` does).
"""
