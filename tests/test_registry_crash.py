"""Crash safety and concurrency: real processes, real SQLite, real kill -9."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _registry_helpers import sha256_of
from safetensors.numpy import save_file

from assetkit import Registry

ADD = """
import sys
from assetkit import Registry
reg = Registry(sys.argv[1])
for path in sys.argv[2:]:
    result = reg.add(path)
    print(result.created, result.record.name, flush=True)
"""


def _files(folder: Path, count: int, mib: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        tensors = {f"down_blocks.{j}.weight": rng.standard_normal((mib * 1024 * 1024 // 4 // 4,), dtype=np.float32)
                   for j in range(4)}
        path = folder / f"model{seed}_{i}.safetensors"
        save_file(tensors, path, metadata={"i": str(i)})
        out.append(path)
    return out


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")]))
    return env


@pytest.mark.slow
def test_kill_9_at_random_moments_leaves_a_registry_that_verifies(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    rng = random.Random(9)
    killed = 0
    files: list[Path] = []
    for round_ in range(6):
        files += _files(tmp_path / "in", 2, 24, seed=100 + round_)  # new bytes each round
        proc = subprocess.Popen([sys.executable, "-c", ADD, str(root), *map(str, files)], env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.3, 1.5))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.communicate()
        with Registry(root) as reg:
            report = reg.verify()
            assert report.ok, [f.to_text() for f in report.findings]
            for item in reg.ls():  # whatever was indexed is complete
                record = reg.get(item["id"])
                out = Path(reg.export(record.name, tmp_path / f"check-{record.id}.safetensors", form="file",
                                      overwrite=True)["path"])
                assert sha256_of(out) == record.sha256
                out.unlink()
    assert killed >= 1
    # a last uninterrupted run completes the set; gc removes the leftovers of the killed ones
    done = subprocess.run([sys.executable, "-c", ADD, str(root), *map(str, files)], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with Registry(root) as reg:
        assert sorted(a["sha256"] for a in reg.ls()) == sorted(sha256_of(f) for f in files)
        reg.gc(grace_seconds=0)
        assert list(reg.store.iter_temporary()) == []
        needed = {r[0] for r in reg.conn.execute("SELECT blob FROM refs")}
        assert set(reg.store.iter_blobs()) == needed
        assert reg.verify().ok


@pytest.mark.slow
def test_several_processes_adding_at_once_all_succeed(tmp_path: Path) -> None:
    shared = _files(tmp_path / "shared", 1, 8, seed=2)
    own = [_files(tmp_path / f"own{i}", 1, 8, seed=10 + i) for i in range(3)]
    root = tmp_path / "reg"
    procs = [subprocess.Popen([sys.executable, "-c", ADD, str(root), *map(str, shared + mine)], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for mine in own]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    with Registry(root) as reg:
        shas = sorted(a["sha256"] for a in reg.ls())
        assert shas == sorted(sha256_of(f) for f in shared + [m[0] for m in own])  # the shared file once
        assert reg.verify().ok
