"""The worker client: a job in another process, and every way that process can go wrong, named with its fix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mtl_core.errors import CancelledError
from mtl_core.jobs import Job
from plugin.core.worker import WorkerClient, WorkerError, cached_onnx

from .conftest import needs_worker

pytestmark = pytest.mark.slow


def _train_job(crop_dir: Path, out: Path, steps: int = 4000) -> Job:
    return Job(kind="train", config=str(crop_dir / "crop.yaml"), out=str(out), device="cpu",
               train={"steps": steps, "batch_size": 4, "eval_every": steps, "architecture": {"encoder_depth": 3}})


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@needs_worker
def test_cancel_stops_the_worker_and_writes_nothing(crop_dir, tmp_path):
    out = tmp_path / "m.mtl.safetensors"
    client = WorkerClient(sys.executable)
    seen: list[float] = []
    with pytest.raises(CancelledError, match="worker process was stopped"):
        client.run(_train_job(crop_dir, out), progress=seen.append, cancelled=lambda: bool(seen))
    assert seen and _gone(client.pid) and list(tmp_path.iterdir()) == []


@needs_worker
def test_training_reports_its_phases_losses_and_validations(crop_dir, tmp_path):
    """What the Train page draws: every step's losses (main, each auxiliary modality, total), each validation's
    metrics and the phases, as they happen."""
    out = tmp_path / "m.mtl.safetensors"
    records: list[dict] = []
    job = Job(kind="train", config=str(crop_dir / "crop.yaml"), out=str(out), device="cpu",
              train={"steps": 6, "batch_size": 2, "eval_every": 3, "architecture": {"encoder_depth": 3}})
    result = WorkerClient(sys.executable, on_train=records.append).run(job)
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6] and {r["steps"] for r in steps} == {6}
    assert all(set(r["losses"]) == {"main", "aux/swir", "total"} and r["losses"]["main"] > 0 for r in steps)
    validations = [r for r in records if r["kind"] == "validation"]
    assert [r["step"] for r in validations] == [3, 6] and all("miou" in r["metrics"] for r in validations)
    phases = [r["phase"] for r in records if r["kind"] == "phase"]
    assert phases[0] == "reading data" and phases[-1] == "writing the model"
    assert {"training", "validating", "testing", "fitting the error model"} <= set(phases)
    assert out.exists() and result.metrics


@needs_worker
def test_a_killed_worker_is_reported_with_the_likely_cause(crop_dir, tmp_path):
    out = tmp_path / "m.mtl.safetensors"
    client = WorkerClient(sys.executable)
    killed = threading.Event()

    def kill_on_progress(_fraction: float) -> None:
        if not killed.is_set():
            killed.set()
            os.kill(client.pid, signal.SIGKILL)  # what the kernel's out-of-memory killer does

    with pytest.raises(WorkerError, match=r"died on SIGKILL \(killed: out of memory\?\); try a smaller batch size"):
        client.run(_train_job(crop_dir, out), progress=kill_on_progress)
    assert not out.exists()


def test_a_python_without_the_packages_names_what_to_install(crop_dir, tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    python = str(bare / "bin" / "python")
    with pytest.raises(WorkerError, match=rf"cannot import .*{python} -m pip install torch"):
        WorkerClient(python).run(_train_job(crop_dir, tmp_path / "m.mtl.safetensors", 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare"]


def test_a_wrong_interpreter_setting_names_the_setting(tmp_path):
    with pytest.raises(WorkerError, match="cannot be started.*Worker Python"):
        WorkerClient(str(tmp_path / "no-python")).run(Job(kind="export", model="m", out=str(tmp_path / "m.onnx")))
    with pytest.raises(WorkerError, match="exited with status 1 before finishing"):
        WorkerClient("/bin/false").run(Job(kind="export", model="m", out=str(tmp_path / "m.onnx")))


@needs_worker
def test_export_is_cached_by_content_and_a_failed_export_leaves_no_cache_entry(tiny_model, tmp_path):
    cache = tmp_path / "cache"
    first, hit = cached_onnx(tiny_model, cache, WorkerClient(sys.executable))
    assert not hit and first.suffix == ".onnx" and first.parent == cache
    again, hit = cached_onnx(tiny_model, cache, WorkerClient("/bin/false"))  # no worker needed for a hit
    assert hit and again == first
    copy = tmp_path / "same.mtl.safetensors"
    copy.write_bytes(tiny_model.read_bytes())
    assert cached_onnx(copy, cache, WorkerClient("/bin/false")) == (first, True)  # keyed by content, not path
    broken = tmp_path / "broken.mtl.safetensors"
    broken.write_bytes(b"not a model")
    with pytest.raises(WorkerError, match="not an MTL Explain model file|safetensors"):
        cached_onnx(broken, cache, WorkerClient(sys.executable))
    assert [p.name for p in cache.iterdir()] == [first.name]
