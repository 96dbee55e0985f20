"""The load-test report: Markdown tables, PNG plots and a capacity recommendation."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HEADROOM = 0.7
"""Plan replicas to run at 70% of the measured capacity: room for spikes and a lost pod."""


def capacity(results: dict[str, Any], peak_rate: float | None) -> dict[str, Any]:
    step = results.get("step")
    per_worker = None
    basis = None
    if step and step.get("max_rate_within_target"):
        per_worker, basis = (
            step["max_rate_within_target"],
            f"step (p99 <= {step['target_p99_ms']} ms)",
        )
    elif step:
        return {
            "per_worker_events_per_s": None,
            "basis": f"No step rate met p99 <= {step['target_p99_ms']} ms: the target is below "
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
    pairs = [
        p for r in results.values() if isinstance(r, dict) for p in r.get("batch_size_means", [])
    ]
    fig, ax = plt.subplots(figsize=(8, 4))
    if pairs:
        ax.hist([m for m, _ in pairs], weights=[n for _, n in pairs], bins=30)
    ax.set_xlabel("mean rows per batch, per telemetry interval")
    ax.set_ylabel("batches")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join("-" if c is None else str(c) for c in cells) + " |"


def write_report(
    out: Path, results: dict[str, Any], meta: dict[str, Any], peak_rate: float | None
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, **results}, indent=2))
    lines = [f"# Load test: {meta['pipeline']} on {meta['bootstrap']}", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()] + [""]
    b = results.get("baselines")
    if b:
        lines += ["## Baselines (same run)", "", "| baseline | figure |", "|---|---|"]
        lines.append(
            _row(["I/O ceiling: passthrough drain (events/s)", b.get("passthrough_events_per_s")])
        )
        for size, rate in b.get("model_rows_per_s", {}).items():
            lines.append(_row([f"model only, batch {size} (rows/s)", rate]))
        lines.append(
            _row(["naive faust agent drain (events/s)", b.get("naive_faust_events_per_s")])
        )
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
                    round(d["events_per_s"] / pt, 2) if pt else None,
                    round(d["events_per_s"] / nf, 1) if nf else None,
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
        _plot_series(out / "steady.png", "steady: latency and throughput over time", steadies)
        lines += ["", "![steady](steady.png)", ""]
    s = results.get("step")
    if s:
        lines += [
            f"## Step (p99 target {s['target_p99_ms']} ms)",
            "",
            "| rate | p50 ms | p99 ms | within target |",
            "|---|---|---|---|",
        ]
        for st in s["steps"]:
            lines.append(
                _row([st["rate"], st["p50_ms"], st["p99_ms"], "yes" if st["ok"] else "no"])
            )
        lines += [
            "",
            f"Knee: {s['knee_rate']} events/s; highest rate within the target: "
            f"{s['max_rate_within_target']}.",
            "",
        ]
        _plot_step(out / "step.png", s)
        lines += ["![step](step.png)", ""]
    sp = results.get("spike")
    if sp:
        lines += [
            "## Spike",
            "",
            f"{sp['factor']}x burst over {sp['rate']} events/s: burst p99 {sp['burst_p99_ms']} "
            "ms; "
            + (
                "the p99 never left the target."
                if sp["recovery_s"] == 0
                else f"p99 back within target {sp['recovery_s']} s after the burst."
            ),
            "",
        ]
        _plot_series(out / "spike.png", "spike", {"spike": sp})
        lines += ["![spike](spike.png)", ""]
    so = results.get("soak")
    if so:
        lines += [
            "## Soak",
            "",
            f"{so['rate']} events/s for {so['seconds']} s: p99 {so['p99_first_fifth_ms']} ms "
            f"in the first fifth, {so['p99_last_fifth_ms']} ms in the last; worker RSS "
            f"{so['rss_start_mb']} -> {so['rss_end_mb']} MB (max {so['rss_max_mb']}).",
            "",
        ]
        _plot_series(out / "soak.png", "soak", {"soak": so})
        lines += ["![soak](soak.png)", ""]
    sc = results.get("scale-out")
    if sc:
        lines += [
            "## Scale-out",
            "",
            "| workers | events/s | per worker | speedup | unmatched |",
            "|---|---|---|---|---|",
        ]
        for r in sc["rows"]:
            lines.append(
                _row(
                    [r["workers"], r["events_per_s"], r["per_worker"], r["speedup"], r["unmatched"]]
                )
            )
        lines += [
            "",
            f"All workers share this machine's {meta.get('cpus', '?')} cores, so the speedup "
            "shows contention here, not the fleet's.",
            "",
        ]
    _plot_batches(out / "batches.png", results)
    lines += ["## Batch sizes", "", "![batch sizes](batches.png)", ""]
    cap = capacity(results, peak_rate)
    lines += ["## Capacity", ""]
    if cap["per_worker_events_per_s"]:
        lines.append(
            f"One worker: {cap['per_worker_events_per_s']:,.0f} events/s ({cap['basis']})."
        )
        if "replicas" in cap:
            lines.append(
                f"For a peak of {cap['peak_rate']:,.0f} events/s at {HEADROOM:.0%} utilisation: "
                f"{cap['replicas']} replicas and at least {cap['partitions']} partitions "
                "(a partition is read by one worker of a group; extra partitions let you "
                "scale out later)."
            )
    else:
        lines.append(cap["basis"] or "Not enough data: run the step or drain scenario.")
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
