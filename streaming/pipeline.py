"""The contract between the generic runtime and one pipeline (e.g. ``pipelines/fraud``).

The runtime knows nothing about fraud: a pipeline module exposes a ``PIPELINE`` object of type
:class:`PipelineSpec`, named by ``pipeline.module`` in the pipeline's YAML.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import BaseModel

if TYPE_CHECKING:
    from streaming.state.spec import StateSpec


class Preprocessor(Protocol):
    """Turns a batch of validated records into a float32 feature matrix, vectorised."""

    feature_names: tuple[str, ...]

    def transform(
        self, records: Sequence[BaseModel], state: np.ndarray | None = None
    ) -> np.ndarray:
        """Return a C-contiguous float32 array of shape (len(records), len(feature_names)).

        ``state``: the state stage's float64 columns for these records (one per aggregate of
        ``PipelineSpec.state``, in order), or None for a pipeline without a state stage."""
        ...


@dataclass(frozen=True, slots=True)
class SyntheticEvent:
    """One generated input record, with the truth the tests and training need."""

    key: bytes
    value: bytes
    event_id: str
    label: int | None
    """Ground truth (1 = fraud) for valid events; None for invalid ones."""
    invalid_kind: str | None
    """Why the event is invalid (e.g. ``malformed_json``), None when it is valid."""
    expected_stage: str | None
    """The dead-letter stage the worker must report (``decode`` or ``validate``), or None."""


class EventGenerator(Protocol):
    """A seeded source of realistic events; the same seed gives the same events."""

    def batch(self, n: int, now_ms: int, invalid_ratio: float = 0.0) -> list[SyntheticEvent]:
        """Return ``n`` events stamped around ``now_ms``; a share ``invalid_ratio`` is invalid."""
        ...


class PreprocessorFactory(Protocol):
    def __call__(self, params: Mapping[str, Any]) -> Preprocessor: ...


class GeneratorFactory(Protocol):
    def __call__(self, seed: int) -> EventGenerator: ...


@dataclass(frozen=True, slots=True)
class PipelineSpec:
    """Everything the runtime needs to know about one pipeline."""

    name: str
    schema: type[BaseModel]
    """pydantic model of one input event; the worker validates every value against it."""
    id_field: str
    """Unique id of an event, copied into its prediction."""
    ts_field: str
    """Event time in epoch milliseconds; end-to-end latency is measured from it."""
    make_preprocessor: PreprocessorFactory
    """Builds the preprocessor from the parameters saved with a model at training time."""
    make_generator: GeneratorFactory
    avro_schema: str | None = None
    """Path of the pipeline's ``.avsc``: the reader schema of ``pipeline.format: avro`` (Avro
    schema resolution against each writer's schema) and the schema ``streaming produce``
    registers. None: records are read with the writer's schema as it is."""
    proto_descriptor: str | None = None
    """Path of a FileDescriptorSet compiled from the pipeline's ``.proto`` (the reader message
    of ``pipeline.format: protobuf``; streaming.formats.proto_descriptor)."""
    proto_message: str | None = None
    """Full name of the reader message in ``proto_descriptor`` (e.g. ``fraud.Transaction``)."""
    state: StateSpec | None = None
    """The per-key windowed features the worker computes before preprocessing
    (streaming.state); None: no state stage, the preprocessor gets ``state=None``."""


def load_pipeline(module: str) -> PipelineSpec:
    """Import ``module`` and return its ``PIPELINE``; fail with a message that names the fix."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(
            f"pipeline.module: cannot import {module!r} ({exc}); it must be an importable "
            "Python module (installed with the project) that defines PIPELINE"
        ) from exc
    spec = getattr(mod, "PIPELINE", None)
    if not isinstance(spec, PipelineSpec):
        raise ValueError(
            f"pipeline.module: {module!r} has no PIPELINE of type streaming.pipeline.PipelineSpec"
        )
    return spec
