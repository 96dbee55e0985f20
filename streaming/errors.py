"""The two ways a worker stops on its own, shared by the modules that raise them."""

from __future__ import annotations


class StartupError(RuntimeError):
    """The worker cannot start; the message names the fix. Nothing was committed."""


class FatalWorkerError(RuntimeError):
    """The worker must stop without committing past what is durable."""
