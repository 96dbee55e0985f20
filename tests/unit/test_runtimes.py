"""The runtimes: onnxruntime and torch agree, artifacts are checked, cuda fails clearly here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.export import export_model
from streaming.runtimes.base import ModelLoadError
from streaming.runtimes.registry import create_runtime
from streaming.runtimes.torch import (
    MAX_PAD_FACTOR,
    CapturedGraph,
    TorchRuntime,
    buffer_rows,
    check_device,
    plan_batch,
)

DIM = 30


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(DIM, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1), torch.nn.Sigmoid()
    )
    out = tmp_path_factory.mktemp("models") / "toy" / "v1"
    return export_model(
        net,
        out,
        name="toy",
        version="v1",
        feature_names=[f"f{i}" for i in range(DIM)],
        preprocessing={"note": "none"},
        metrics={"roc_auc": 0.5},
    )


def batch(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 2, size=(n, DIM)).astype(np.float32)


@pytest.mark.parametrize("n", [1, 7, 128])
def test_onnx_and_torch_agree_to_1e_5(model_dir: Path, n: int) -> None:
    onnx_rt = create_runtime("onnx", model_dir)
    torch_rt = create_runtime("torch", model_dir)
    onnx_rt.load()
    torch_rt.load()
    x = batch(n)
    a, b = onnx_rt.predict(x), torch_rt.predict(x)
    assert a.shape == b.shape == (n,) and a.dtype == np.float32
    assert float(np.max(np.abs(a - b))) < 1e-5
    assert ((a >= 0) & (a <= 1)).all()


def test_warm_up_and_the_batch_width_check(model_dir: Path) -> None:
    rt = create_runtime("onnx", model_dir)
    rt.load()
    rt.warm_up((1, 8, 64))
    with pytest.raises(ValueError, match=r"expected a batch of shape \(n, 30\)"):
        rt.predict(np.zeros((4, DIM + 1), dtype=np.float32))


def test_metadata_lists_checksums_and_dims(model_dir: Path) -> None:
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert meta["input_dim"] == DIM and set(meta["files"]) == {"model.onnx", "model.pt"}
    assert all(len(h) == 64 for h in meta["files"].values())


@pytest.mark.parametrize("framework,file", [("onnx", "model.onnx"), ("torch", "model.pt")])
def test_a_corrupt_artifact_fails_load_on_its_checksum(
    model_dir: Path, tmp_path: Path, framework: str, file: str
) -> None:
    bad = tmp_path / "v1"
    shutil.copytree(model_dir, bad)
    data = bytearray((bad / file).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / file).write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="checksum"):
        create_runtime(framework, bad).load()


def test_a_missing_model_says_make_models(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="make models"):
        create_runtime("onnx", tmp_path / "nothing")


def test_unknown_framework() -> None:
    with pytest.raises(ValueError, match="onnx, torch"):
        create_runtime("tensorflow", Path("."))


def test_cuda_runs_where_there_is_one_and_fails_clearly_where_not(model_dir: Path) -> None:
    if torch.cuda.is_available():
        cpu = create_runtime("torch", model_dir)
        gpu = create_runtime("torch", model_dir, device="cuda", cuda_graphs=True)
        half = create_runtime("torch", model_dir, device="cuda", half=True)
        for rt in (cpu, gpu, half):
            rt.load()
        gpu.warm_up((1, 8, 64))
        half.warm_up((1, 8, 64))
        for n in (1, 5, 8, 50, 64, 300):
            x = batch(n, seed=n)
            assert np.max(np.abs(gpu.predict(x) - cpu.predict(x))) < 1e-5
            assert np.max(np.abs(half.predict(x) - cpu.predict(x))) < 1e-3
    else:
        with pytest.raises(ModelLoadError, match="torch sees no CUDA device"):
            create_runtime("torch", model_dir, device="cuda:0").load()
        with pytest.raises(ModelLoadError, match=r"no CUDA provider"):
            create_runtime("onnx", model_dir, device="cuda").load()


def test_half_on_cpu_is_refused_with_the_fix() -> None:
    with pytest.raises(ModelLoadError, match="half: false"):
        check_device("cpu", half=True)


def test_cuda_batch_plans() -> None:
    captured = [1, 8, 32, 128]
    assert plan_batch(8, captured, graphs=True).graph  # exact size: replay
    p = plan_batch(20, captured, graphs=True)
    assert (p.size, p.graph) == (32, True)  # padded up to the next captured size
    p = plan_batch(60, captured, graphs=True)
    assert (p.size, p.graph) == (60, False)  # 128 would be over MAX_PAD_FACTOR x padding
    assert 60 * MAX_PAD_FACTOR < 128
    p = plan_batch(500, captured, graphs=True)
    assert (p.size, p.graph) == (500, False)  # beyond every graph: eager
    assert not plan_batch(8, captured, graphs=False).graph
    assert [buffer_rows(n) for n in (1, 2, 3, 100, 128, 129)] == [1, 2, 4, 128, 128, 256]


class CpuReplay:
    """Stands in for a captured CUDA graph on cpu: replaying runs what capture recorded."""

    def __init__(self, recorded) -> None:  # type: ignore[no-untyped-def]
        self.recorded = recorded

    def replay(self) -> None:
        self.recorded()


def cpu_graph(rt: TorchRuntime, rows: int, copies: bool, off_by: float = 0.0) -> CapturedGraph:
    """A graph as ``_try_capture`` builds it, its buffers on cpu. With ``copies`` it reads the
    host input and writes the host output itself; without, the runtime copies around it."""
    host_in, static_in = torch.zeros((rows, DIM)), torch.zeros((rows, DIM))
    host_out, static_out = torch.zeros(rows), torch.zeros(rows)

    def recorded() -> None:
        scores = rt._model(host_in if copies else static_in).reshape(-1) + off_by
        (host_out if copies else static_out).copy_(scores)

    return CapturedGraph(CpuReplay(recorded), host_in, host_out, static_in, static_out, copies)  # type: ignore[arg-type]


@pytest.mark.parametrize("copies", [True, False])
def test_a_graph_replay_pads_and_never_returns_padding_rows(model_dir: Path, copies: bool) -> None:
    rt = TorchRuntime(model_dir)
    rt.load()
    graph = cpu_graph(rt, 8, copies)
    x = batch(8, seed=3)
    with torch.inference_mode():
        full = rt._replay(graph, x)
        assert full.shape == (8,)
        np.testing.assert_allclose(full, rt.predict(x), atol=1e-6)
        # a smaller batch after a full one: the rows left over are zeroed, not scored as stale
        small = rt._replay(graph, x[:3])
    assert small.shape == (3,)
    np.testing.assert_allclose(small, rt.predict(x[:3]), atol=1e-6)
    assert not graph.host_in_rows[3:].any()


def test_a_graph_that_scores_unlike_eager_code_is_refused(model_dir: Path) -> None:
    rt = TorchRuntime(model_dir)
    rt.load()
    assert rt._agrees_with_eager(cpu_graph(rt, 8, copies=True))
    assert rt._agrees_with_eager(cpu_graph(rt, 8, copies=False))
    assert not rt._agrees_with_eager(cpu_graph(rt, 8, copies=True, off_by=1e-3))


def test_a_runtime_refuses_options_it_does_not_take(model_dir: Path) -> None:
    with pytest.raises(ValueError, match="half: not options of runtime onnx"):
        create_runtime("onnx", model_dir, half=True)
    assert create_runtime("onnx", model_dir, half=False, cuda_graphs=None) is not None
