"""Verdicts: each version in a closed window against the baseline version in the same window.

Comparing with the baseline in the same window, not with fixed numbers, is what keeps a
change in the traffic (a holiday, an attack, a new merchant) from being blamed on a canary:
if both versions move, the canary is not worse. Score drift is measured against each
version's own training-time histogram, so a canary whose scores look nothing like what it
produced on held-out data fails even when its share of flags happens to look normal, but only
while its inputs look like its training inputs: when they have moved too (a cold start with
every card's state empty, a shift in the traffic), the canary's scores moving says nothing
against it, and the comparisons with the baseline in the same window decide alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streaming.config import MonitorConfig
from streaming.observability.drift import DriftBaseline, psi
from streaming.rollout.monitor.windows import VersionWindow, Window

OK = "ok"
FAIL = "fail"
INSUFFICIENT = "insufficient"
BASELINE = "baseline"


@dataclass
class Verdict:
    window_start_ms: int
    window_end_ms: int
    model: str
    version: str
    role: str
    """baseline, canary or shadow."""
    verdict: str
    """ok, fail, insufficient (too few events to judge) or baseline."""
    reasons: list[str]
    stats: dict[str, Any]
    compared_with: str | None
    feature_psi: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """What was not judged in this window and why (a thin sample, inputs that drifted)."""

    def record(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "role": self.role,
            "verdict": self.verdict,
            "reasons": self.reasons,
            "compared_with": self.compared_with,
            "window_start_ms": self.window_start_ms,
            "window_end_ms": self.window_end_ms,
            **self.stats,
            "feature_psi": self.feature_psi,
            "notes": self.notes,
        }


def version_stats(vw: VersionWindow, baseline: DriftBaseline | None) -> dict[str, Any]:
    score_psi = None
    if baseline is not None and baseline.score is not None and vw.score_counts is not None:
        score_psi = round(psi(baseline.score.counts, vw.score_counts), 4)
    return {
        "events": vw.scored,
        "flagged_share": round(vw.flagged_share, 5),
        "decision_shares": vw.decision_shares,
        "latency_p50_ms": round(vw.latency_ms.percentile(50), 2) if vw.scored else None,
        "latency_p99_ms": round(vw.latency_ms.percentile(99), 2) if vw.scored else None,
        "errors": vw.errors,
        "error_rate": round(vw.error_rate, 5),
        "score_psi": score_psi,
        "batches": vw.batches,
        "inference_ms_mean": round(vw.inference_ms_total / vw.batches, 4) if vw.batches else None,
    }


MIN_DRIFT_SAMPLE_PER_BIN = 20
"""PSI of n samples over k equal bins is about (k-1)/n by chance alone: 20 per bin keeps that
near 0.05, well below the 0.25 that means a real shift."""


def feature_psi(vw: VersionWindow, baseline: DriftBaseline | None) -> dict[str, float]:
    if baseline is None:
        return {}
    out = {}
    for name, counts in vw.feature_counts.items():
        hist = baseline.features.get(name)
        if hist is None or counts.shape != hist.counts.shape:
            continue
        if counts.sum() >= MIN_DRIFT_SAMPLE_PER_BIN * counts.size:
            out[name] = round(psi(hist.counts, counts), 4)
    return out


def drifted_inputs(fpsi: dict[str, float], cfg: MonitorConfig) -> dict[str, float]:
    """The inputs whose PSI is past ``monitor.max_feature_psi`` (input_drift alerts, and no
    score PSI held against a canary)."""
    return {f: p for f, p in fpsi.items() if p > cfg.max_feature_psi}


def score_drift_blocker(
    c: dict[str, Any],
    drifted_inputs: dict[str, float],
    score_bins: int,
    cfg: MonitorConfig,
    inputs_unknown: bool = False,
) -> str | None:
    """Why the canary's score PSI cannot be held against it in this window (None: it can).

    A thin sample's PSI is noisy ((bins-1)/n on average by chance alone, with a long tail);
    inputs that drifted move the scores of a sensitive model (a logistic one) more than those
    of the baseline, through no fault of its own (measured: 0.28 against the MLP baseline's
    0.007 in the same window, every card's state cold, amount_sum_24h PSI 0.98).
    ``inputs_unknown``: the version has input histograms but the window holds too few input
    samples to say whether they drifted (telemetry lags the predictions: a first window).
    """
    need = MIN_DRIFT_SAMPLE_PER_BIN * score_bins
    if c["events"] < need:
        return (
            f"score PSI not judged: {c['events']} events < {need} "
            f"({MIN_DRIFT_SAMPLE_PER_BIN} per bin of {score_bins})"
        )
    if inputs_unknown:
        return "score PSI not judged: too few input samples in the window to tell drift"
    if drifted_inputs:
        moved = ", ".join(f"{f} PSI {p:.3f}" for f, p in sorted(drifted_inputs.items()))
        return (
            f"score PSI not judged: its inputs drifted ({moved} > {cfg.max_feature_psi}), "
            "so the comparisons with the baseline decide"
        )
    return None


def compare(
    c: dict[str, Any], b: dict[str, Any], cfg: MonitorConfig, score_blocker: str | None = None
) -> list[str]:
    """Why canary stats ``c`` are worse than baseline stats ``b`` (empty: not worse).

    ``score_blocker`` (score_drift_blocker) says why score PSI is left out, if it is.
    """
    reasons = []
    cp, bp = c["score_psi"], b["score_psi"]
    if (
        score_blocker is None
        and cp is not None
        and cp > cfg.max_score_psi
        and (bp is None or bp <= cfg.max_score_psi)
    ):
        reasons.append(
            f"score PSI {cp:.3f} against its training scores > {cfg.max_score_psi} "
            f"(baseline {bp if bp is not None else 'n/a'})"
        )
    delta = c["flagged_share"] - b["flagged_share"]
    if abs(delta) > cfg.max_flagged_delta:
        reasons.append(
            f"flags {c['flagged_share']:.2%} of events vs the baseline's "
            f"{b['flagged_share']:.2%} (allowed difference {cfg.max_flagged_delta:.2%})"
        )
    excess = c["error_rate"] - b["error_rate"]
    if excess > cfg.max_error_rate_delta:
        reasons.append(
            f"error rate {c['error_rate']:.2%} vs the baseline's {b['error_rate']:.2%} "
            f"(allowed excess {cfg.max_error_rate_delta:.2%})"
        )
    c99, b99 = c["latency_p99_ms"], b["latency_p99_ms"]
    if (
        c99 is not None
        and b99
        and c99 / b99 > cfg.max_p99_ratio
        and c99 - b99 > cfg.min_p99_excess_ms
    ):
        reasons.append(
            f"p99 latency {c99:.1f} ms vs the baseline's {b99:.1f} ms "
            f"(allowed ratio {cfg.max_p99_ratio})"
        )
    return reasons


def judge(
    window: Window,
    *,
    model: str,
    baseline: str,
    canaries: list[str],
    shadows: list[str],
    baselines: dict[str, DriftBaseline | None],
    cfg: MonitorConfig,
) -> list[Verdict]:
    """One verdict per version seen in the window (and per expected version not seen)."""
    roles = {baseline: BASELINE} | dict.fromkeys(canaries, "canary")
    roles |= {s: "shadow" for s in shadows if s not in roles}
    for seen in window.versions:
        roles.setdefault(seen, "canary")
    stats = {
        v: version_stats(window.versions.get(v, VersionWindow()), baselines.get(v)) for v in roles
    }
    base = stats[baseline]
    out = []
    for version, role in roles.items():
        s = stats[version]
        s_total = {
            **s,
            "pipeline_dead_letters": dict(window.dead_letters),
            "pipeline_events": window.events,
        }
        own_baseline = baselines.get(version)
        fpsi = feature_psi(window.versions.get(version, VersionWindow()), own_baseline)
        notes: list[str] = []
        if role == BASELINE:
            verdict, reasons = BASELINE, []
            if s["events"] < cfg.min_events:
                reasons = [f"{s['events']} events < monitor.min_events ({cfg.min_events})"]
        elif s["events"] < cfg.min_events or base["events"] < cfg.min_events:
            verdict = INSUFFICIENT
            reasons = [
                f"{s['events']} events (baseline {base['events']}) < monitor.min_events "
                f"({cfg.min_events})"
            ]
        else:
            blocker = None
            if s["score_psi"] is not None and own_baseline and own_baseline.score is not None:
                drifted = drifted_inputs(fpsi, cfg)
                bins = own_baseline.score.counts.size
                unknown = bool(own_baseline.features) and not fpsi
                blocker = score_drift_blocker(s, drifted, bins, cfg, unknown)
            notes = [blocker] if blocker else []
            reasons = compare(s, base, cfg, blocker)
            verdict = FAIL if reasons else OK
        out.append(
            Verdict(
                window.start_ms,
                window.end_ms,
                model,
                version,
                role,
                verdict,
                reasons,
                s_total,
                None if role == BASELINE else baseline,
                fpsi,
                notes,
            )
        )
    return out


class RollbackTracker:
    """Counts each canary's consecutive failing windows; says when it has failed enough."""

    def __init__(self, bad_windows: int) -> None:
        self.bad_windows = bad_windows
        self._streak: dict[str, list[int]] = {}

    def observe(self, verdict: Verdict) -> list[int] | None:
        """The failing windows' starts when ``verdict`` completes a streak, else None."""
        if verdict.role != "canary" or verdict.verdict == INSUFFICIENT:
            return None
        if verdict.verdict != FAIL:
            self._streak.pop(verdict.version, None)
            return None
        streak = self._streak.setdefault(verdict.version, [])
        streak.append(verdict.window_start_ms)
        if len(streak) >= self.bad_windows:
            return list(streak)
        return None

    def reset(self, version: str) -> None:
        self._streak.pop(version, None)
