"""Benchmark: ``assetkit inspect --json`` against what a user would otherwise run for the same facts.

On a ~2 GB SD1.5 safetensors file and a ~2 GB SD1.5 torch zip checkpoint (fp16, real key names
from ../shared/layouts/sd15.json), each command runs as a whole process. The same 1,143 tensors
in a tiny (~8 MB) zip checkpoint and a 6.9 GB SDXL safetensors file show that assetkit's time
depends on the number of tensors, not on the size of the file:

* ``assetkit inspect --json FILE``
* safetensors: ``safetensors.safe_open`` listing every key, dtype and shape
* torch zip: ``torch.load(mmap=True, weights_only=True)`` listing every key, dtype and shape

Usage: ``python bench/bench_inspect.py [--workdir DIR] [--runs N] [--keep]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    DEFAULT_WORKDIR,
    PYTHON,
    assetkit_cmd,
    ensure_sparse_safetensors,
    ensure_torch_checkpoint,
    measure,
    print_table,
)

SAFE_OPEN = (
    "import sys\nfrom safetensors import safe_open\n"
    "with safe_open(sys.argv[1], 'np') as f:\n"
    "    facts = {k: (str(f.get_slice(k).get_dtype()), f.get_slice(k).get_shape()) for k in f.keys()}\n"
    "    meta = f.metadata()\n"
    "print(len(facts))\n"
)
MAKE_TINY = (
    "import sys\nfrom assetkit.factory import make_fixture\n"
    "make_fixture('sd15', sys.argv[1], 'torch-zip', filename='sd15-tiny.ckpt')\n"
)
TORCH_LOAD = (
    "import sys, torch\n"
    "sd = torch.load(sys.argv[1], mmap=True, weights_only=True, map_location='cpu')\n"
    "sd = sd.get('state_dict', sd)\n"
    "facts = {k: (str(v.dtype), tuple(v.shape)) for k, v in sd.items()}\n"
    "print(len(facts))\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the generated checkpoints for later runs")
    args = parser.parse_args()

    st = ensure_sparse_safetensors(args.workdir / "sd15-fp16-sparse.safetensors", "sd15", "F16")
    ckpt = ensure_torch_checkpoint(args.workdir / "sd15-fp16.ckpt", "sd15", "F16")
    results = {}
    tiny = args.workdir / "sd15-tiny.ckpt"
    if not tiny.exists():
        subprocess.run([PYTHON, "-c", MAKE_TINY, str(args.workdir)], check=True)
    sdxl = ensure_sparse_safetensors(args.workdir / "sdxl-fp16-sparse.safetensors", "sdxl_base", "F16")
    size_rows = [
        measure(f"{path.name} ({path.stat().st_size / 1e9:.3f} GB)", assetkit_cmd("inspect", "--json", str(path)),
                runs=args.runs)
        for path in (tiny, ckpt, st, sdxl)
    ]
    results["by size"] = print_table("assetkit inspect --json by file size", size_rows)
    for label, path, other_label, other in (
        ("safetensors", st, "safetensors.safe_open", [PYTHON, "-c", SAFE_OPEN, str(st)]),
        ("torch zip", ckpt, "torch.load(mmap, weights_only)", [PYTHON, "-c", TORCH_LOAD, str(ckpt)]),
    ):
        size_gb = path.stat().st_size / 1e9
        ours = measure("assetkit inspect --json", assetkit_cmd("inspect", "--json", str(path)), runs=args.runs)
        theirs = measure(other_label, other, runs=args.runs)
        results[label] = print_table(f"{label}: {path.name} ({size_gb:.2f} GB)", [theirs, ours])
        print(f"assetkit is {theirs.median / ours.median:.1f}x faster than {other_label}")
    print("\nJSON:", json.dumps(results))
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
