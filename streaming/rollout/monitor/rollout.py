"""The monitor's decisions, without Kafka: which version is the baseline, what each closed
window says, and when a canary is rolled back (the faust app in ``app.py`` feeds it)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from streaming.config import PipelineConfig
from streaming.observability.drift import DriftBaseline
from streaming.rollout.control import RoutingUpdate
from streaming.rollout.monitor.judge import FAIL, RollbackTracker, Verdict, drifted_inputs, judge
from streaming.rollout.monitor.windows import WindowStore
from streaming.runtimes.base import ModelLoadError, ModelMetadata

log = logging.getLogger("streaming.monitor")


class MonitorStartError(RuntimeError):
    """The monitor cannot start; the message says what to fix."""


def load_baselines(cfg: PipelineConfig) -> dict[str, DriftBaseline | None]:
    """Each version's drift baseline from its metadata (None where a model has none)."""
    out: dict[str, DriftBaseline | None] = {}
    for vc in cfg.model.versions:
        try:
            meta = ModelMetadata.read(cfg.version_dir(vc))
            out[vc.version] = DriftBaseline.from_metadata(meta.raw.get("drift_baseline"))
        except (ModelLoadError, KeyError, TypeError, ValueError) as exc:
            raise MonitorStartError(
                f"model {cfg.model.name}/{vc.version}: {exc}; the monitor reads each version's "
                "metadata.json for its drift baseline (build the models: make models)"
            ) from None
        if out[vc.version] is None:
            log.warning(
                "%s/%s has no drift_baseline in its metadata: no score or input drift for it",
                cfg.model.name,
                vc.version,
            )
    return out


@dataclass
class TickResult:
    verdicts: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    update: RoutingUpdate | None
    """A routing change to publish on the control topic (a rollback), or None."""


class RolloutMonitor:
    """Windows, verdicts and rollbacks for one model."""

    def __init__(
        self, cfg: PipelineConfig, baselines: dict[str, DriftBaseline | None] | None = None
    ) -> None:
        self.cfg = cfg
        m = cfg.monitor
        self.baselines = baselines if baselines is not None else load_baselines(cfg)
        self.store = WindowStore(
            int(m.window_s * 1000), int(m.grace_s * 1000), cfg.model.threshold, self.baselines
        )
        self.weights = {v.version: v.weight for v in cfg.model.versions}
        self.shadows = {v.version: v.shadow_share for v in cfg.model.versions if v.shadow_share}
        self.tracker = RollbackTracker(m.bad_windows)
        self.windows_judged = 0
        self.rollbacks: list[dict[str, Any]] = []
        self._decided_ms = 0
        """When the monitor last changed the routing itself: control records written before
        that are older than the weights it holds."""

    # -------------------------------------------------------------- routing in force

    def follow(self, update: RoutingUpdate, produced_ms: int) -> bool:
        """A control record read back from the topic; one written before the monitor's own
        last rollback is stale (read late, e.g. on a busy machine) and is not applied, or it
        would bring the rolled-back canary back to life and roll it back twice."""
        if produced_ms < self._decided_ms:
            return False
        self.apply_routing(update)
        return True

    def apply_routing(self, update: RoutingUpdate) -> None:
        for version in update.weights:
            if update.weights[version] > 0 and self.weights.get(version, 0) == 0:
                self.tracker.reset(version)  # re-enabled by someone: judge it afresh
        self.weights = dict(update.weights)
        self.shadows = dict(update.shadows)

    def baseline(self) -> str:
        if self.cfg.monitor.baseline:
            return self.cfg.monitor.baseline
        live = {v: w for v, w in self.weights.items() if w > 0}
        # Highest weight; ties go to the version listed first in the config.
        order = [v.version for v in self.cfg.model.versions]
        return max(live, key=lambda v: (live[v], -order.index(v) if v in order else 0))

    def canaries(self) -> list[str]:
        base = self.baseline()
        return [v for v, w in self.weights.items() if w > 0 and v != base]

    # -------------------------------------------------------------- windows

    def tick(self, now_ms: int | None = None) -> TickResult:
        """Judge the windows that closed by ``now_ms``; decide rollbacks."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        verdicts: list[dict[str, Any]] = []
        alerts: list[dict[str, Any]] = []
        update: RoutingUpdate | None = None
        m = self.cfg.monitor
        for window in self.store.close(now_ms):
            if not any(v.scored or v.errors for v in window.versions.values()):
                continue  # only telemetry after the traffic stopped: nothing to judge
            self.windows_judged += 1
            baseline = self.baseline()
            results = judge(
                window,
                model=self.cfg.model.name,
                baseline=baseline,
                canaries=self.canaries(),
                shadows=[v for v, s in self.shadows.items() if s > 0],
                baselines=self.baselines,
                cfg=m,
            )
            for v in results:
                verdicts.append(v.record())
                alerts += self._drift_alerts(v, now_ms)
                failed = self.tracker.observe(v)
                if failed is None:
                    continue
                if self.weights.get(v.version, 0) <= 0:
                    # Out of the routing already: what it scored before the workers applied
                    # that is judged now (a monitor reading behind), and is not a new failure.
                    self.tracker.reset(v.version)
                    continue
                alert, change = self._act_on_failure(v, failed, now_ms)
                alerts.append(alert)
                if change is not None:
                    update = change
        return TickResult(verdicts, alerts, update)

    def _drift_alerts(self, v: Verdict, now_ms: int) -> list[dict[str, Any]]:
        limit = self.cfg.monitor.max_feature_psi
        drifted = drifted_inputs(v.feature_psi, self.cfg.monitor)
        if not drifted:
            return []
        return [
            {
                "kind": "input_drift",
                "model": v.model,
                "version": v.version,
                "window_start_ms": v.window_start_ms,
                "window_end_ms": v.window_end_ms,
                "feature_psi": drifted,
                "reason": (
                    f"inputs moved away from {v.version}'s training data: "
                    + ", ".join(f"{f} PSI {p:.3f}" for f, p in sorted(drifted.items()))
                    + f" > {limit}"
                ),
                "ts_ms": now_ms,
            }
        ]

    def _act_on_failure(
        self, v: Verdict, windows: list[int], now_ms: int
    ) -> tuple[dict[str, Any], RoutingUpdate | None]:
        m = self.cfg.monitor
        alert: dict[str, Any] = {
            "model": v.model,
            "version": v.version,
            "baseline": v.compared_with,
            "failed_windows_start_ms": windows,
            "window_s": m.window_s,
            "reasons": v.reasons,
            "stats": {k: v.stats.get(k) for k in ("events", "flagged_share", "error_rate")},
            "ts_ms": now_ms,
        }
        before = dict(self.weights)
        after = {**before, v.version: 0.0}
        if not m.auto_rollback:
            alert |= {"kind": "canary_failing", "action": "none (monitor.auto_rollback is off)"}
            self.tracker.reset(v.version)
            return alert, None
        if not any(w > 0 for w in after.values()):
            alert |= {"kind": "canary_failing", "action": "none: it is the only live version"}
            return alert, None
        update = RoutingUpdate(weights=after, shadows=dict(self.shadows))
        self.apply_routing(update)
        self._decided_ms = now_ms
        self.tracker.reset(v.version)
        alert |= {
            "kind": "rollback",
            "action": f"weight of {v.version} set to 0 through the control topic",
            "weights_before": before,
            "weights_after": after,
        }
        self.rollbacks.append(alert)
        log.warning(
            "rolled back %s/%s after %d failing windows: %s",
            v.model,
            v.version,
            len(windows),
            "; ".join(v.reasons),
        )
        return alert, update


def act_on_label_failure(
    monitor: RolloutMonitor, verdict: dict[str, Any], windows: list[int], now_ms: int
) -> tuple[dict[str, Any], RoutingUpdate | None]:
    """Alert (and, with auto_rollback, the routing change) for a canary failing on labels."""
    v = Verdict(
        verdict["window_start_ms"],
        verdict["window_end_ms"],
        verdict["model"],
        verdict["version"],
        "canary",
        FAIL,
        verdict["reasons"],
        {"recall": verdict["recall"], "baseline_recall": verdict["baseline_recall"]},
        verdict["compared_with"],
    )
    alert, update = monitor._act_on_failure(v, windows, now_ms)
    alert["basis"] = "labels"
    alert["stats"] = v.stats
    return alert, update


def failing(verdicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in verdicts if v["verdict"] == FAIL]
