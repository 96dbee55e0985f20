"""A pool of worker processes in one pod: ``streaming run --processes N`` (worker.processes)."""
