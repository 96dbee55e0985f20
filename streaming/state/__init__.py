"""Per-key windowed features computed in the stream (the state stage).

spec: what a pipeline declares; store: one partition's state and the semantics (replays,
late events, expiry); stage: the engine's stage over all assigned partitions.
"""

from streaming.state.spec import Aggregate, StateSpec
from streaming.state.stage import StateStage, history_features
from streaming.state.store import PartitionState

__all__ = ["Aggregate", "PartitionState", "StateSpec", "StateStage", "history_features"]
