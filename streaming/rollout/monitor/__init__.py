"""``streaming monitor``: per-version windows over predictions, telemetry and dead letters,
a verdict per window, drift against the training baselines, and automatic rollback."""
