"""Streaming inference workers: Kafka in, batched model inference, predictions out."""

__version__ = "0.1.0"
