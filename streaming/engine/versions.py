"""A model version as the worker runs it: the loaded, warmed runtime with its preprocessor,
batch lane, breaker, call watch and drift sketch, checked against the pipeline before any event
comes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streaming.config import PipelineConfig, VersionConfig
from streaming.engine.batching import BatchPolicy
from streaming.engine.breaker import CircuitBreaker
from streaming.engine.calls import CallWatch
from streaming.engine.lane import Lane
from streaming.errors import StartupError
from streaming.observability.drift import DriftBaseline, FeatureSketch
from streaming.observability.latency import LatencyRecorder
from streaming.observability.metrics import WorkerMetrics
from streaming.observability.stats import ScoringTotals
from streaming.observability.telemetry import IntervalCounts
from streaming.pipeline import PipelineSpec, Preprocessor
from streaming.runtimes.base import ModelLoadError, Runtime
from streaming.runtimes.registry import create_runtime


@dataclass
class ModelVersion:
    """One loaded version. Its lane is the hand-off between the feeding thread (puts) and the
    version's inference thread (takes); ``interval`` and ``totals`` are written by that
    inference thread only; ``end_to_end_ms`` by the delivery thread only."""

    config: VersionConfig
    runtime: Runtime
    preprocessor: Preprocessor
    lane: Lane
    breaker: CircuitBreaker
    predictions_metric: Any
    watch: CallWatch
    """The model call in progress and whether it hung (streaming.engine.calls)."""
    sketch: FeatureSketch | None = None
    """Live input histograms in the model's drift-baseline bins (for the monitor)."""
    end_to_end_ms: LatencyRecorder = field(default_factory=LatencyRecorder)
    interval: IntervalCounts = field(default_factory=IntervalCounts)
    """Counts since the last telemetry record."""
    totals: ScoringTotals = field(default_factory=ScoringTotals)
    """Counts since start (for the summary and the benchmarks)."""

    @property
    def name(self) -> str:
        return self.config.version


def load_version(
    cfg: PipelineConfig, vc: VersionConfig, pipeline: PipelineSpec, metrics: WorkerMetrics
) -> ModelVersion:
    """Load, check and warm one version; every failure is a StartupError that names the fix."""
    directory = cfg.version_dir(vc)
    try:
        runtime = create_runtime(
            vc.runtime, directory, vc.device, vc.threads, half=vc.half, cuda_graphs=vc.cuda_graphs
        )
        runtime.load()
    except ModelLoadError as exc:
        raise StartupError(f"model {cfg.model.name}/{vc.version}: {exc}") from None
    meta = runtime.metadata
    pre = pipeline.make_preprocessor(meta.preprocessing)
    if tuple(pre.feature_names) != tuple(meta.feature_names) or meta.input_dim != len(
        pre.feature_names
    ):
        raise StartupError(
            f"model {cfg.model.name}/{vc.version} expects {meta.input_dim} inputs "
            f"({', '.join(meta.feature_names[:4])}…) but the pipeline's preprocessing makes "
            f"{len(pre.feature_names)}; rebuild the model (make models) for this pipeline"
        )
    runtime.warm_up(cfg.batching.warmup_sizes())
    b = cfg.batching
    policy = BatchPolicy(
        max_batch_size=b.max_batch_size,
        max_delay_s=b.max_delay_ms / 1000.0,
        preferred_sizes=b.preferred_batch_sizes,
        deadline_s=b.deadline_ms / 1000.0 if b.deadline_ms is not None else None,
    )
    version = ModelVersion(
        vc,
        runtime,
        pre,
        Lane(policy, b.max_queued_events),
        CircuitBreaker(cfg.worker.breaker_failures, cfg.worker.breaker_cooldown_s),
        metrics.predictions.labels(cfg.name, cfg.model.name, vc.version),
        CallWatch(vc.version, cfg.worker.inference_timeout_s),
    )
    try:
        baseline = DriftBaseline.from_metadata(meta.raw.get("drift_baseline"))
    except (KeyError, TypeError, ValueError) as exc:
        raise StartupError(
            f"model {cfg.model.name}/{vc.version}: bad drift_baseline in its metadata "
            f"({exc}); rebuild the model (make models)"
        ) from None
    if baseline is not None and baseline.features:
        version.sketch = FeatureSketch(baseline)
    metrics.track_end_to_end(cfg.model.name, vc.version, version.end_to_end_ms)
    return version
