"""The load-test report: Markdown tables, PNG plots and a capacity recommendation."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HEADROOM = 0.7
"""Plan replicas to run at 70% of the measured capacity: room for spikes and a lost pod."""

MIN_INTERVALS = 3
"""Fewer points than this make no plot worth reading (one bar on an axis of +-0.4 around it):
the report says so instead."""

_SCALES = ((1e9, "G"), (1e6, "M"))


def fmt(value: Any, unit: str = "") -> str:
    """A figure as people read it: ``32,526 events/s``, ``4.42 M rows/s``, ``12.3 ms``.

    Floats are measurements: three significant digits below 100 (trailing zeros dropped),
    whole numbers with thousands separators up to a million, M and G above. Ints are counts and
    stay exact. None (and NaN) is "-" with no unit; text passes through unchanged.
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    text = f"{value:,}" if isinstance(value, int) else _measurement(value)
    return f"{text} {unit}" if unit else text


def _measurement(value: float) -> str:
    for scale, suffix in _SCALES:
        if abs(value) >= scale * 0.9995:  # what rounds to 1.00 M is 1 M, not 1,000,000
            scaled = value / scale
            return f"{scaled:.3g} {suffix}" if abs(scaled) < 999.5 else f"{scaled:,.0f} {suffix}"
    if abs(value) >= 99.95:
        return f"{value:,.0f}"
    text = f"{value:.3g}"
    if "e" in text:  # below 0.0001: plain digits, not 1e-05
        text = f"{value:.6f}".rstrip("0").rstrip(".") or "0"
    return text


def capacity(results: dict[str, Any], peak_rate: float | None) -> dict[str, Any]:
    step = results.get("step")
    per_worker = None
    basis = None
    if step and step.get("max_rate_within_target"):
        per_worker, basis = (
            step["max_rate_within_target"],
            f"step (p99 <= {fmt(step['target_p99_ms'], 'ms')})",
        )
    elif step:
        return {
            "per_worker_events_per_s": None,
            "basis": f"No step rate met p99 <= {fmt(step['target_p99_ms'], 'ms')}: the target is "
            "below "
            "this setup's latency floor (see the lowest step's p50/p99); raise --target-p99-ms "
            "or start from a lower rate.",
        }
    elif results.get("drain"):
        per_worker, basis = results["drain"]["events_per_s"] * HEADROOM, "drain x 0.7"
    out: dict[str, Any] = {"per_worker_events_per_s": per_worker, "basis": basis}
    if per_worker and peak_rate:
        replicas = max(1, math.ceil(peak_rate / (per_worker * HEADROOM)))
        out |= {
            "peak_rate": peak_rate,
            "replicas": replicas,
            # One partition per replica at least; twice that leaves room to scale out.
            "partitions": max(replicas * 2, 4),
        }
    return out


def _plot_series(path: Path, title: str, runs: dict[str, dict[str, Any]]) -> None:
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for name, r in runs.items():
        s = r["series"]
        ax1.plot(
            s["t"], [v if v is not None else float("nan") for v in s["p50_ms"]], label=f"{name} p50"
        )
        ax1.plot(
            s["t"], [v if v is not None else float("nan") for v in s["p99_ms"]], label=f"{name} p99"
        )
        ax2.plot(s["t"], s["sent"], label=f"{name} sent/s")
        ax2.plot(s["t"], s["outputs_per_s"], label=f"{name} outputs/s", linestyle="--")
    ax1.set_ylabel("end-to-end latency (ms)")
    ax1.set_yscale("log")
    ax1.legend(fontsize=7)
    ax2.set_ylabel("events/s")
    ax2.set_xlabel("seconds")
    ax2.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_step(path: Path, step: dict[str, Any]) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    rates = [s["rate"] for s in step["steps"]]
    ax.plot(rates, [s["p50_ms"] or float("nan") for s in step["steps"]], "o-", label="p50")
    ax.plot(rates, [s["p99_ms"] or float("nan") for s in step["steps"]], "o-", label="p99")
    ax.axhline(step["target_p99_ms"], color="grey", linestyle=":", label="p99 target")
    if step["knee_rate"] is not None:
        ax.axvline(step["knee_rate"], color="red", linestyle="--", label="knee")
    ax.set_xlabel("offered events/s (one worker)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_batches(path: Path, results: dict[str, Any]) -> None:
    pairs = _batch_pairs(results)
    fig, ax = plt.subplots(figsize=(8, 4))
    if pairs:
        ax.hist([m for m, _ in pairs], weights=[n for _, n in pairs], bins=30)
    ax.set_xlabel("mean rows per batch, per telemetry interval")
    ax.set_ylabel("batches")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _growth(soak: dict[str, Any]) -> str:
    """The soak's RSS change on its own: at three digits 101.1 -> 101.9 MB reads 101 -> 102."""
    start, end = soak.get("rss_start_mb"), soak.get("rss_end_mb")
    if start is None or end is None:
        return ""
    return f", {'+' if end >= start else ''}{fmt(float(end - start), 'MB')} over the run"


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(fmt(c) for c in cells) + " |"


def _figure(
    path: Path, alt: str, points: int, noun: str, draw: Callable[[Path], None], least: int
) -> list[str]:
    """The plot's Markdown, or a sentence saying why there is none (a stale PNG of an earlier
    report in the same folder is removed, so the folder never shows a plot the report lacks)."""
    if points < least:
        path.unlink(missing_ok=True)
        return [f"*{alt}: too few intervals to plot ({points} {noun}; a plot needs {least}).*", ""]
    draw(path)
    return [f"![{alt}]({path.name})", ""]


def _series_points(runs: dict[str, dict[str, Any]]) -> int:
    return max((len(r["series"]["t"]) for r in runs.values()), default=0)


def _batch_pairs(results: dict[str, Any]) -> list[tuple[float, float]]:
    """(mean rows per batch, batches) per telemetry interval, over every scenario."""
    return [
        (m, n)
        for r in results.values()
        if isinstance(r, dict)
        for m, n in r.get("batch_size_means", [])
    ]


def write_report(
    out: Path, results: dict[str, Any], meta: dict[str, Any], peak_rate: float | None
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, **results}, indent=2))
    lines = [f"# Load test: {meta['pipeline']} on {meta['bootstrap']}", ""]
    lines += [f"- {k}: {fmt(v)}" for k, v in meta.items()] + [""]
    b = results.get("baselines")
    if b:
        lines += ["## Baselines (same run)", "", "| baseline | figure |", "|---|---|"]
        pt_rate = b.get("passthrough_events_per_s")
        lines.append(_row(["I/O ceiling: passthrough drain", fmt(pt_rate, "events/s")]))
        for size, rate in b.get("model_rows_per_s", {}).items():
            lines.append(_row([f"model only, batch {size}", fmt(rate, "rows/s")]))
        faust_rate = b.get("naive_faust_events_per_s")
        lines.append(_row(["naive faust agent drain", fmt(faust_rate, "events/s")]))
        lines.append("")
    d = results.get("drain")
    if d:
        lines += [
            "## Drain",
            "",
            "| events | workers | seconds from start | events/s | vs passthrough "
            "| vs naive faust | unmatched | duplicates |",
            "|---|---|---|---|---|---|---|---|",
        ]
        pt = (b or {}).get("passthrough_events_per_s")
        nf = (b or {}).get("naive_faust_events_per_s")
        lines.append(
            _row(
                [
                    d["events"],
                    d["workers"],
                    d["seconds_from_start"],
                    d["events_per_s"],
                    d["events_per_s"] / pt if pt else None,
                    d["events_per_s"] / nf if nf else None,
                    d["unmatched"],
                    d["duplicates"],
                ]
            )
        )
        lines.append("")
    steadies = {k: v for k, v in results.items() if k.startswith("steady")}
    if steadies:
        lines += [
            "## Steady",
            "",
            "| rate | seconds | achieved/s | p50 ms | p99 ms | max ms | unmatched |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in steadies.values():
            lines.append(
                _row(
                    [
                        r["rate"],
                        r["seconds"],
                        r["achieved_per_s"],
                        r["p50_ms"],
                        r["p99_ms"],
                        r["max_ms"],
                        r["unmatched"],
                    ]
                )
            )
        lines.append("")
        lines += _figure(
            out / "steady.png",
            "steady",
            _series_points(steadies),
            "one-second intervals",
            lambda p: _plot_series(p, "steady: latency and throughput over time", steadies),
            MIN_INTERVALS,
        )
    s = results.get("step")
    if s:
        lines += [
            f"## Step (p99 target {fmt(s['target_p99_ms'], 'ms')})",
            "",
            "| rate | p50 ms | p99 ms | within target |",
            "|---|---|---|---|",
        ]
        for st in s["steps"]:
            lines.append(
                _row([st["rate"], st["p50_ms"], st["p99_ms"], "yes" if st["ok"] else "no"])
            )
        knee, top = s["knee_rate"], s["max_rate_within_target"]
        lines += [
            "",
            f"Knee: {fmt(knee, 'events/s') if knee is not None else 'none among these rates'}; "
            "highest rate within the target: "
            f"{fmt(top, 'events/s') if top is not None else 'none of these rates'}.",
            "",
        ]
        # a line of latency against rate needs two rates, not three intervals
        lines += _figure(
            out / "step.png", "step", len(s["steps"]), "rates", lambda p: _plot_step(p, s), 2
        )
    sp = results.get("spike")
    if sp:
        lines += [
            "## Spike",
            "",
            f"{fmt(sp['factor'])}x burst over {fmt(sp['rate'], 'events/s')}: burst p99 "
            f"{fmt(sp['burst_p99_ms'], 'ms')}; "
            + (
                "the p99 never left the target."
                if sp["recovery_s"] == 0
                else f"p99 back within target {fmt(sp['recovery_s'], 's')} after the burst."
                if sp["recovery_s"] is not None
                else "the p99 was not back within the target by the end of the run."
            ),
            "",
        ]
        lines += _figure(
            out / "spike.png",
            "spike",
            _series_points({"spike": sp}),
            "one-second intervals",
            lambda p: _plot_series(p, "spike", {"spike": sp}),
            MIN_INTERVALS,
        )
    so = results.get("soak")
    if so:
        lines += [
            "## Soak",
            "",
            f"{fmt(so['rate'], 'events/s')} for {fmt(so['seconds'], 's')}: p99 "
            f"{fmt(so['p99_first_fifth_ms'], 'ms')} in the first fifth, "
            f"{fmt(so['p99_last_fifth_ms'], 'ms')} in the last; worker RSS "
            f"{fmt(so['rss_start_mb'])} -> {fmt(so['rss_end_mb'], 'MB')} "
            f"(max {fmt(so['rss_max_mb'], 'MB')}{_growth(so)}).",
            "",
        ]
        lines += _figure(
            out / "soak.png",
            "soak",
            _series_points({"soak": so}),
            "one-second intervals",
            lambda p: _plot_series(p, "soak", {"soak": so}),
            MIN_INTERVALS,
        )
    sc = results.get("scale-out")
    if sc:
        lines += [
            "## Scale-out",
            "",
            "| workers | processes each | events/s | per process | speedup | unmatched | "
            "duplicates |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in sc["rows"]:
            lines.append(
                _row(
                    [
                        r["workers"],
                        r.get("processes", 1),
                        r["events_per_s"],
                        r["per_worker"],
                        r["speedup"],
                        r["unmatched"],
                        r.get("duplicates", 0),
                    ]
                )
            )
        lines += [
            "",
            f"All workers share this machine's {fmt(meta.get('cpus', '?'))} cores, so the speedup "
            "shows contention here, not the fleet's.",
            "",
        ]
    lines += ["## Batch sizes", ""]
    lines += _figure(
        out / "batches.png",
        "batch sizes",
        len(_batch_pairs(results)),
        "telemetry intervals",
        lambda p: _plot_batches(p, results),
        MIN_INTERVALS,
    )
    cap = capacity(results, peak_rate)
    lines += ["## Capacity", ""]
    if cap["per_worker_events_per_s"]:
        lines.append(
            f"One worker: {fmt(cap['per_worker_events_per_s'], 'events/s')} ({cap['basis']})."
        )
        if "replicas" in cap:
            lines.append(
                f"For a peak of {fmt(cap['peak_rate'], 'events/s')} at {HEADROOM:.0%} utilisation: "
                f"{cap['replicas']} replicas and at least {cap['partitions']} partitions "
                "(a partition is read by one worker of a group; extra partitions let you "
                "scale out later)."
            )
    else:
        lines.append(cap["basis"] or "Not enough data: run the step or drain scenario.")
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
