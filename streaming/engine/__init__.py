"""The event path between the source and the sink: decode, route, preprocess, batch, score,
and the records it writes (predictions and dead letters)."""
