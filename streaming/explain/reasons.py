"""Reason codes: attributions summed over the features of each code, the strongest first.

In numpy over a whole batch (a column add per feature, one sort), or where it is built
(``C_TOP``, streaming/explain/_top_codes.c) in one C call: a batch explains a handful of rows,
and there numpy's per-call costs were most of the time. The numpy stays as the fallback and
the reference the tests hold the C to. Both add a code's attributions in feature order: a
matrix product adds them in whatever order the BLAS build picks, and a last-bit difference
flips a weight that sits on a rounding half (9 x 5e-5 gave 0.0005 in C, 0.0004 from BLAS).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

import numpy as np

from streaming.config import ConfigError
from streaming.config_sections import ReasonsConfig
from streaming.explain.types import Reason

try:  # built by setup.py where a compiler is found
    from streaming.explain import _top_codes as C_TOP
except ImportError:  # pragma: no cover - the numpy below gives the same reasons
    C_TOP = None  # type: ignore[assignment]

WEIGHT_DECIMALS = 4
"""Weights are logits; 1e-4 is far below what separates two reasons, and keeps records short."""


class ReasonCodes:
    """The pipeline's feature -> code mapping, checked against one model's features."""

    def __init__(
        self, codes: Sequence[tuple[str, str]], membership: np.ndarray, feature_names: Sequence[str]
    ) -> None:
        self.codes = tuple(code for code, _ in codes)
        self.texts = tuple(text for _, text in codes)
        self.feature_names = tuple(feature_names)
        self.membership = np.asarray(membership, dtype=np.float64)
        """(d, codes) 0/1: feature j belongs to code c."""
        if self.membership.shape != (len(self.feature_names), len(self.codes)):
            raise ValueError(
                f"membership {self.membership.shape} for {len(self.feature_names)} features and "
                f"{len(self.codes)} codes"
            )
        if (self.membership.sum(axis=1) > 1).any():
            raise ValueError("membership: a feature belongs to one code at most")
        self._owner = np.where(
            self.membership.any(axis=1), self.membership.argmax(axis=1), -1
        ).astype(np.int64)
        """(d,) the code of each feature, -1 for none: what the C sums by."""

    @classmethod
    def from_config(cls, config: Any, feature_names: Sequence[str]) -> ReasonCodes:
        """From a PipelineConfig (its ``reasons``) or a ReasonsConfig; a feature name that
        matches none of the model's, or a feature claimed by two codes, fails (ConfigError)
        with its path in the config."""
        section = getattr(config, "reasons", config)
        if not isinstance(section, ReasonsConfig):
            raise ConfigError("reasons: the pipeline config has no reason codes section")
        names = list(feature_names)
        owner: dict[int, str] = {}
        codes: list[tuple[str, str]] = []
        columns: list[np.ndarray] = []
        for code, spec in section.codes.items():
            col = np.zeros(len(names))
            for i, pattern in enumerate(spec.features):
                hits = [j for j, name in enumerate(names) if fnmatch.fnmatchcase(name, pattern)]
                if not hits:
                    raise ConfigError(
                        f"reasons.codes.{code}.features.{i}: {pattern!r} is not a feature of the "
                        f"model (its features: {', '.join(names)}); fix the name, or rebuild the "
                        "model if the feature is new (make models)"
                    )
                for j in hits:
                    if owner.get(j, code) != code:
                        raise ConfigError(
                            f"reasons.codes.{code}.features.{i}: {names[j]!r} is already in "
                            f"reasons.codes.{owner[j]}; a feature belongs to one code"
                        )
                    owner[j] = code
                    col[j] = 1.0
            codes.append((code, spec.text))
            columns.append(col)
        if section.unmapped is not None:
            rest = np.array([0.0 if j in owner else 1.0 for j in range(len(names))])
            if rest.any():
                codes.append((section.unmapped.code, section.unmapped.text))
                columns.append(rest)
        return cls(codes, np.column_stack(columns), names)

    @property
    def unmapped_features(self) -> tuple[str, ...]:
        """Features in no code: their attributions are in no reason."""
        return tuple(
            n for n, row in zip(self.feature_names, self.membership, strict=True) if not row.any()
        )

    def weights(self, attributions: np.ndarray) -> np.ndarray:
        """(n, d) attributions -> (n, codes): each code's summed attribution."""
        attr = np.asarray(attributions, dtype=np.float64)
        if attr.ndim != 2 or attr.shape[1] != len(self.feature_names):
            raise ValueError(
                f"attributions of shape {attr.shape}; expected (n, {len(self.feature_names)})"
            )
        w = np.zeros((attr.shape[0], len(self.codes)))
        for j, code in enumerate(self._owner.tolist()):  # feature order, as the C adds
            if code >= 0:
                w[:, code] += attr[:, j]
        return w

    def top(self, attributions: np.ndarray, k: int = 4, native: bool = True) -> list[list[Reason]]:
        """Per row: at most ``k`` codes with a positive weight (towards a positive score),
        largest first. A row with none gets an empty list."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if C_TOP is not None and native and self.codes:
            attr = attributions
            if type(attr) is not np.ndarray or attr.dtype != np.float64:
                attr = np.asarray(attr, dtype=np.float64)
            if attr.ndim == 2 and attr.shape[1] == len(self.feature_names):
                return C_TOP.top(
                    attr if attr.flags.c_contiguous else np.ascontiguousarray(attr),
                    self._owner,
                    k,
                    Reason,
                    self.codes,
                    self.texts,
                )
        w = self.weights(attributions).round(WEIGHT_DECIMALS)
        if not len(w):
            return []
        k = min(k, w.shape[1])
        # stable sort on -w: ties keep the config's order, so equal weights list the same way
        order = np.argsort(-w, axis=1, kind="stable")[:, :k]
        codes, texts = self.codes, self.texts
        # one tolist per matrix, not two per row, and the weights picked from the row's list
        # (take_along_axis cost more than the rest of this for the few rows of a batch)
        return [
            [Reason(codes[c], texts[c], row_w[c]) for c in row_order if row_w[c] > 0]
            for row_order, row_w in zip(order.tolist(), w.tolist(), strict=True)
        ]
