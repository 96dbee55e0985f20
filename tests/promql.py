"""PromQL expressions of the dashboard and the rules, and a probe of each that must return
data on a live Prometheus (an alert's condition is empty while all is well; the quantity it
compares is not)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

CHART_FILES = Path(__file__).resolve().parents[1] / "helm" / "streaming-workers" / "files"
DASHBOARD = CHART_FILES / "dashboard.json"
RULES = CHART_FILES / "alerts.rules.yml"

_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")


def dashboard_exprs(variables: dict[str, str]) -> list[tuple[str, str]]:
    """(panel title, expression) with the template variables filled in."""
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
                expr = expr.replace(f"${name}", value)
            assert "$" not in expr, f"unfilled variable in {panel['title']}: {expr}"
            out.append((panel["title"], expr))
    return out


def rule_exprs() -> list[tuple[str, str, bool]]:
    """(rule name, expression, is_alert) of every rule in the rules file."""
    out = []
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule["record"]
            out.append((name, " ".join(rule["expr"].split()), "alert" in rule))
    return out


def _top_level_split(expr: str, token: str) -> list[str]:
    """Split ``expr`` at ``token`` where it is outside (), {}, [] and quotes."""
    parts, depth, quote, start, i = [], 0, "", 0, 0
    while i < len(expr):
        c = expr[i]
        if quote:
            quote = "" if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif depth == 0 and expr.startswith(token, i):
            before = expr[i - 1] if i else " "
            after = expr[i + len(token)] if i + len(token) < len(expr) else " "
            word_ok = not token.isalpha() or (not before.isalnum() and not after.isalnum())
            op_ok = token not in ("<", ">") or (after != "=" and before not in "<>=!")
            if word_ok and op_ok:
                parts.append(expr[start:i])
                i += len(token)
                start = i
                continue
        i += 1
    parts.append(expr[start:])
    return [p.strip() for p in parts]


def probe(expr: str) -> str:
    """The quantity an alert compares: the first ``and`` clause, left of its comparison."""
    clause = _top_level_split(expr, "and")[0]
    for op in _COMPARISONS:
        parts = _top_level_split(clause, op)
        if len(parts) > 1:
            return re.sub(
                r"\s+(on|ignoring)\s*\([^)]*\)\s*(group_left|group_right)?(\(\))?$", "", parts[0]
            ).strip()
    return clause
