"""Kafka: every client of the project, and the readers of the observations topic.

Owns: client configuration and construction (:mod:`include.kafka.clients`, the only place a producer, consumer or
admin client is made), the bounded reader at explicit offsets (:mod:`include.kafka.reader`), what it hands over
(:mod:`include.kafka.records`: messages as columns), the event-time merge of several partitions into one training
order (:mod:`include.kafka.merge`), tensorflow-io's reader
(:mod:`include.kafka.tfio_reader`), and the trainer's dead letters (:mod:`include.kafka.dead_letters`). Never
decides what a row means (the schema does) and never commits offsets on its own initiative.
"""
