"""The rules routing weights and shadows obey, in one place and free of numpy, so that the
config loader (every CLI command) can check them without the engine's imports."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def routing_problem(
    weights: Mapping[str, float], shadows: Mapping[str, float], known: Iterable[str]
) -> str | None:
    """What is wrong with these weights and shadows for these versions, or None.

    The one place the rules live: the config, the control topic, ``streaming route`` and the
    router all ask here."""
    known = set(known)
    unknown = sorted((set(weights) | set(shadows)) - known)
    if unknown:
        return f"unknown version(s) {', '.join(unknown)}; loaded: {', '.join(sorted(known))}"
    if any(w < 0 for w in weights.values()):
        return "weights must be >= 0"
    if not any(w > 0 for w in weights.values()):
        return "every weight is 0; at least one version needs weight > 0"
    bad = {v: s for v, s in shadows.items() if not 0 <= s <= 1}
    if bad:
        return f"shadow shares must lie in 0..1, got {bad}"
    return None
