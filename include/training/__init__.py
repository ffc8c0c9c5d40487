"""The bounded training task and what it trains.

Owns: planning a run and resuming it from the newest checkpoint and its offsets, the read-train loop, durability
(checkpoint, then history, then the consumer group's offsets), the decoder from messages to the model's raw input,
the Keras model, the compiled incremental learner, drift detection and the batch baseline. Never ingests, never
serves predictions, and never reads the environment (settings arrive as an object).
"""
