"""The one extension point for models: load, warm up, predict a float32 batch to scores."""

from __future__ import annotations

import abc
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

METADATA_FILE = "metadata.json"


class ModelLoadError(RuntimeError):
    """A model artifact is missing, corrupt or does not fit the pipeline."""


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """What ``models/<name>/<version>/metadata.json`` says about a built model."""

    name: str
    version: str
    input_dim: int
    feature_names: tuple[str, ...]
    preprocessing: dict[str, Any]
    files: dict[str, str]
    """Artifact file name (``model.onnx``, ``model.pt``) -> sha256 hex digest."""
    metrics: dict[str, float]
    raw: dict[str, Any]

    @classmethod
    def read(cls, directory: Path) -> ModelMetadata:
        path = directory / METADATA_FILE
        if not path.is_file():
            raise ModelLoadError(f"{path}: no model metadata; build the models first (make models)")
        try:
            raw = json.loads(path.read_text())
            return cls(
                name=str(raw["name"]),
                version=str(raw["version"]),
                input_dim=int(raw["input_dim"]),
                feature_names=tuple(raw["feature_names"]),
                preprocessing=dict(raw["preprocessing"]),
                files={str(k): str(v) for k, v in raw["files"].items()},
                metrics={str(k): float(v) for k, v in raw.get("metrics", {}).items()},
                raw=raw,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(
                f"{path}: unreadable metadata ({exc!r}); rebuild the model"
            ) from exc

    def verified_file(self, directory: Path, file_name: str) -> Path:
        """Return the artifact's path after checking it exists and matches its checksum."""
        path = directory / file_name
        if file_name not in self.files:
            raise ModelLoadError(f"{directory / METADATA_FILE}: lists no {file_name}")
        if not path.is_file():
            raise ModelLoadError(f"{path}: missing; rebuild the model (make models)")
        digest = sha256_file(path)
        if digest != self.files[file_name]:
            raise ModelLoadError(
                f"{path}: checksum {digest[:12]}… does not match the metadata's "
                f"{self.files[file_name][:12]}…; the artifact is corrupt or from another build"
            )
        return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Runtime(abc.ABC):
    """A loaded model that scores float32 batches. Subclasses only implement ``_run``."""

    framework: str = "?"
    OPTIONS: tuple[str, ...] = ()
    """Keyword arguments of its own the runtime takes (the registry refuses any other)."""

    def __init__(self, directory: Path, device: str = "cpu", threads: int = 1) -> None:
        self.directory = directory
        self.device = device
        self.threads = threads
        self.metadata = ModelMetadata.read(directory)

    @abc.abstractmethod
    def load(self) -> None:
        """Load the artifact (checksum verified) onto the configured device."""

    @abc.abstractmethod
    def _run(self, features: np.ndarray) -> np.ndarray:
        """Score a (n, input_dim) float32 batch; return n scores in [0, 1]."""

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> None:
        """Run each batch size once so the first real batch pays no allocation cost."""
        for n in batch_sizes:
            self.predict(np.zeros((n, self.metadata.input_dim), dtype=np.float32))

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Score a batch; guarantees one float32 score per input row."""
        if features.ndim != 2 or features.shape[1] != self.metadata.input_dim:
            raise ValueError(
                f"{self.metadata.name}/{self.metadata.version}: expected a batch of shape "
                f"(n, {self.metadata.input_dim}), got {features.shape}"
            )
        scores = np.asarray(self._run(features), dtype=np.float32).reshape(-1)
        if scores.shape[0] != features.shape[0]:
            raise RuntimeError(
                f"{self.metadata.name}/{self.metadata.version} ({self.framework}) returned "
                f"{scores.shape[0]} scores for {features.shape[0]} rows: the runtime does not "
                "preserve batch size"
            )
        return scores
