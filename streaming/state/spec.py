"""What a pipeline declares for its stateful feature stage: fields, aggregates, windows.

Validated when the pipeline is loaded, so that a wrong declaration fails at start with the
aggregate's name and the fix, never mid-stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("count", "sum", "mean", "max", "distinct", "last", "since_last")
"""count: events in the window; sum/mean/max of a numeric field; distinct: distinct values of
a field (capped at ``cap``); last: the field's value at the latest event; since_last: seconds
from the latest event to this one."""
_NEEDS_FIELD = {"sum", "mean", "max", "distinct", "last"}


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One output feature: ``kind`` of ``field`` over the sliding window ``window_ms``."""

    name: str
    """The output column's name (the preprocessor reads it by position in ``StateSpec``)."""
    kind: str
    window_ms: int
    """Events with event time in (t - window_ms, t] count, t being the event's time."""
    field: str | None = None
    """The record attribute aggregated (None for count and since_last)."""
    default: float = 0.0
    """The value when the window holds no event (mean, max, last); since_last defaults to the
    window in seconds unless a default is given."""
    cap: int = 64
    """distinct only: values are counted up to this many (bounded memory and work)."""

    def __post_init__(self) -> None:
        where = f"state aggregate {self.name!r}"
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.window_ms <= 0:
            raise ValueError(f"{where}: window_ms must be > 0 (got {self.window_ms})")
        if (self.kind in _NEEDS_FIELD) != (self.field is not None):
            need = "needs a field" if self.kind in _NEEDS_FIELD else "takes no field"
            raise ValueError(f"{where}: kind {self.kind} {need}")
        if self.cap < 1:
            raise ValueError(f"{where}: cap must be >= 1")


@dataclass(frozen=True, slots=True)
class StateSpec:
    """The stage: per Kafka key, aggregates of the key's earlier events over event time."""

    ts_field: str
    """Event time of a record, epoch milliseconds."""
    aggregates: tuple[Aggregate, ...]
    grace_ms: int = 60_000
    """An event older than the partition's latest event time minus this is late: it is scored
    with the features as of the partition's latest event time and not added to the state."""
    replay_margin_ms: int = 3_600_000
    """Events are kept this much longer than the longest window needs, so that an event read
    again after a crash (within this much event time) is scored exactly as the first time."""
    fields: tuple[str, ...] = field(init=False)
    """The record attributes the state keeps, in column order."""

    def __post_init__(self) -> None:
        if not self.aggregates:
            raise ValueError("state: declare at least one aggregate")
        names = [a.name for a in self.aggregates]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"state: aggregate names must be unique (repeated: {sorted(dup)})")
        if self.grace_ms < 0 or self.replay_margin_ms < 0:
            raise ValueError("state: grace_ms and replay_margin_ms must be >= 0")
        fields: list[str] = []
        for a in self.aggregates:
            if a.field is not None and a.field not in fields:
                fields.append(a.field)
        object.__setattr__(self, "fields", tuple(fields))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.aggregates)

    @property
    def longest_ms(self) -> int:
        return max(a.window_ms for a in self.aggregates)

    @property
    def horizon_ms(self) -> int:
        """How far behind the partition's event time an event (or a key) is still kept."""
        return self.longest_ms + self.grace_ms + self.replay_margin_ms
