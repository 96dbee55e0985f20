"""Metrics, telemetry records, running counts, latency, drift sketches, logs and the HTTP port."""
