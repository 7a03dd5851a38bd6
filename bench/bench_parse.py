"""Benchmark: in-process parse times that used to be wall-clock bounds in the tests.

* a 2,500-tensor safetensors header: assetkit's strict reader vs ``safetensors.safe_open``;
* an SD-1.x-sized ``data.pkl`` (1,143 tensors): assetkit's pickle interpreter vs
  ``pickletools.genops`` (an opcode walk that interprets nothing, the cheapest reader there is).

    python bench/bench_parse.py [--runs 7]

Prints the best of ``--runs`` for each and the ratio; targets: header < 100 ms, data.pkl < 100 ms
(they only catch accidental quadratic work).
"""

from __future__ import annotations

import argparse
import io
import json
import pickletools
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import LAYOUTS  # noqa: E402


def best_of(runs: int, fn: Callable[[], object]) -> float:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - started)
    return min(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    import torch
    from safetensors import safe_open

    from assetkit.formats.pickle_vm import run_pickle
    from assetkit.formats.safetensors import read_safetensors
    from assetkit.formats.safetensors_writer import SafetensorsWriter, TensorSpec

    with tempfile.TemporaryDirectory() as tmp:
        specs = [TensorSpec(f"model.diffusion_model.blocks.{i}.attn.to_q.weight", "F16", (8, 4)) for i in range(2500)]
        path = Path(tmp) / "many.safetensors"
        with SafetensorsWriter(path, specs, {"format": "pt"}) as writer:
            writer.write(bytes(sum(spec.nbytes for spec in specs)))

        def ours() -> None:
            read_safetensors(path).close()

        def theirs() -> None:
            with safe_open(str(path), framework="np") as fh:
                list(fh.keys())

        a, b = best_of(args.runs, ours), best_of(args.runs, theirs)
        print(f"2,500-tensor header: assetkit {a * 1e3:.1f} ms, safetensors.safe_open {b * 1e3:.1f} ms, "
              f"ratio {a / b:.2f} (target < 100 ms)")

    keys = json.loads((LAYOUTS / "sd15.json").read_text())["keys"]
    buf = io.BytesIO()
    torch.save({"state_dict": {k: torch.zeros(1, dtype=torch.float16) for k in keys}}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    a = best_of(args.runs, lambda: run_pickle(data))
    b = best_of(args.runs, lambda: sum(1 for _ in pickletools.genops(data)))
    print(f"SD-1.x data.pkl ({len(keys)} tensors): assetkit {a * 1e3:.1f} ms, pickletools.genops {b * 1e3:.1f} ms, "
          f"ratio {a / b:.2f} (target < 100 ms)")


if __name__ == "__main__":
    main()
