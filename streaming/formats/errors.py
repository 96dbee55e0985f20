"""What a framed decoder tells the engine besides records and rejections (no registry imports)."""

from __future__ import annotations


class DecodeDeferred(Exception):
    """The worker is stopping while the registry is down: the batch is left undecoded and
    uncommitted (it is read again after the restart), never dead-lettered."""
