"""Shared benchmark plumbing: run whole processes, measure wall time and peak RSS, print ratios.

Benchmarks compare assetkit with what a user would otherwise run, in the same run, on the same
files. Each command runs as its own process (start-up and imports count, as they do for a user).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAYOUTS = REPO.parent / "shared" / "layouts"
DEFAULT_WORKDIR = REPO / "bench" / "out"
PYTHON = sys.executable


@dataclass
class Measurement:
    label: str
    wall_s: list[float]
    peak_rss_mib: list[float]

    @property
    def best(self) -> float:
        return min(self.wall_s)

    @property
    def median(self) -> float:
        return statistics.median(self.wall_s)

    @property
    def rss(self) -> float:
        return max(self.peak_rss_mib)


def user_env() -> dict[str, str]:
    """The environment a user runs in: Python may cache bytecode (PYTHONDONTWRITEBYTECODE, set on
    some CI and sandbox machines, would make every process recompile every module it imports)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_once(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run ``cmd`` to completion; return (wall seconds, peak RSS MiB of that process)."""
    wall, rss, _ = run_timed(cmd, env)
    return wall, rss


def run_timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """Run ``cmd`` to completion; return (wall seconds, peak RSS MiB, CPU seconds user + system).

    Keep the measuring process small (build inputs in child processes): a forked child starts
    with its parent's resident pages, which would count in its peak.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env or user_env())
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
    if proc.stderr:
        proc.stderr.close()
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime  # Linux reports KiB


def measure(label: str, cmd: list[str], runs: int = 5, warmup: int = 1, env: dict[str, str] | None = None,
            before_each=None) -> Measurement:
    for _ in range(warmup):
        if before_each:
            before_each()
        run_once(cmd, env)
    walls, rsss = [], []
    for _ in range(runs):
        if before_each:
            before_each()
        wall, rss = run_once(cmd, env)
        walls.append(wall)
        rsss.append(rss)
    return Measurement(label, walls, rsss)


def print_table(title: str, rows: list[Measurement], baseline: Measurement | None = None) -> list[dict]:
    """Print median/best wall, peak RSS and ratio to ``baseline`` (or to the first row)."""
    base = baseline or rows[0]
    print(f"\n== {title}")
    print(f"{'command':<52} {'median s':>9} {'best s':>8} {'peak MiB':>9} {'x ' + base.label[:14]:>18}")
    out = []
    for row in rows:
        ratio = row.median / base.median if base.median else float("nan")
        print(f"{row.label:<52} {row.median:>9.3f} {row.best:>8.3f} {row.rss:>9.1f} {ratio:>18.2f}")
        out.append({"label": row.label, "median_s": row.median, "best_s": row.best,
                    "peak_rss_mib": row.rss, "ratio": ratio})
    return out


def load_layout(name: str) -> dict[str, dict]:
    with open(LAYOUTS / f"{name}.json", encoding="utf-8") as fh:
        return json.load(fh)["keys"]


def assetkit_cmd(*args: str) -> list[str]:
    """The installed ``assetkit`` console script, as a user runs it."""
    return [str(Path(PYTHON).parent / "assetkit"), *args]


_NP_TORCH = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64"}


def ensure_sparse_safetensors(path: Path, layout: str, dtype: str = "F16") -> Path:
    """A full-size safetensors file of ``layout`` with float tensors in ``dtype``, zero-filled and sparse."""
    if path.exists():
        return path
    keys = load_layout(layout)
    sizes = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8}
    header, offset = {}, 0
    for name, info in keys.items():
        dt = info["dtype"] if info["dtype"] not in ("F32", "F16", "BF16") else dtype
        numel = 1
        for d in info["shape"]:
            numel *= d
        header[name] = {"dtype": dt, "shape": info["shape"], "data_offsets": [offset, offset + numel * sizes[dt]]}
        offset += numel * sizes[dt]
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little") + raw)
        fh.truncate(8 + len(raw) + offset)
    tmp.rename(path)
    return path


def ensure_torch_checkpoint(path: Path, layout: str, dtype: str = "F16", legacy: bool = False,
                            wrap_state_dict: bool = True) -> Path:
    """A full-size torch.save checkpoint of ``layout`` (random float data, seeded), like a released .ckpt.

    Written by a child process, so torch and the model's memory never enter the measuring process.
    """
    if path.exists():
        return path
    print(f"writing {path} with torch.save ...", flush=True)
    subprocess.run([PYTHON, __file__, "build-torch", str(path), layout, dtype, str(int(legacy)),
                    str(int(wrap_state_dict))], check=True)
    return path


def _build_torch_checkpoint(path: Path, layout: str, dtype: str, legacy: bool, wrap_state_dict: bool) -> None:
    import torch

    keys = load_layout(layout)
    gen = torch.Generator().manual_seed(0)
    state = {}
    for name, info in keys.items():
        dt = info["dtype"] if info["dtype"] not in ("F32", "F16", "BF16") else dtype
        tdtype = getattr(torch, _NP_TORCH[dt])
        if tdtype.is_floating_point:
            state[name] = torch.randn(info["shape"], generator=gen, dtype=torch.float32).to(tdtype)
        else:
            state[name] = torch.zeros(info["shape"], dtype=tdtype)
    obj = {"state_dict": state, "global_step": 840000, "epoch": 6} if wrap_state_dict else state
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp, _use_new_zipfile_serialization=not legacy)
    tmp.rename(path)


if __name__ == "__main__" and sys.argv[1:2] == ["build-torch"]:
    _path, _layout, _dtype, _legacy, _wrap = sys.argv[2:7]
    _build_torch_checkpoint(Path(_path), _layout, _dtype, _legacy == "1", _wrap == "1")
