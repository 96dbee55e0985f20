"""The built fraud models: both runtimes agree on real features, and they detect fraud."""

from __future__ import annotations

import numpy as np
import pytest

from models.fraud.train import roc_auc
from pipelines.fraud import PIPELINE
from streaming.runtimes.registry import create_runtime
from streaming.state import history_features


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_onnx_and_torch_agree_on_the_fraud_models(models_built, version: str) -> None:
    directory = models_built / version
    onnx_rt, torch_rt = create_runtime("onnx", directory), create_runtime("torch", directory)
    onnx_rt.load()
    torch_rt.load()
    pre = PIPELINE.make_preprocessor(onnx_rt.metadata.preprocessing)
    records, labels = PIPELINE.make_generator(123).training_data(20_000)  # type: ignore[attr-defined]
    # the velocity features by the state stage over the fresh history, as the worker would
    state = history_features(PIPELINE.state, [r.card_id for r in records], records)  # type: ignore[arg-type]
    x = pre.transform(records, state)
    a, b = onnx_rt.predict(x), torch_rt.predict(x)
    assert float(np.max(np.abs(a - b))) < 1e-5
    # fresh data from another seed: the model really separates fraud
    assert roc_auc(labels, a) > 0.75
    assert onnx_rt.metadata.metrics["roc_auc"] > 0.75
