"""Benchmark: ``assetkit scan --json`` vs ``picklescan -p`` on a ~2 GB torch zip checkpoint.

Both run as whole processes (start-up and imports included, as for a user), several times; the
table shows median and best wall time, the peak RSS of each process, and the ratio to picklescan.
Target (issue 3): no slower than 1.5x picklescan while doing a full interpretation.

    python bench/bench_scan.py [--workdir bench/out] [--runs 7] [--keep]

The checkpoint (SD 1.5 key names and shapes from ../shared/layouts/sd15.json, fp16 random data,
``{"state_dict": ..., "global_step": ..., "epoch": ...}`` written by ``torch.save``) is built once in
the work folder and shared with the other benchmarks; ``--keep`` leaves it there afterwards.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import DEFAULT_WORKDIR, PYTHON, assetkit_cmd, ensure_torch_checkpoint, measure, print_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the generated checkpoint for later runs")
    args = parser.parse_args()

    ckpt = ensure_torch_checkpoint(args.workdir / "sd15-fp16.ckpt", "sd15", "F16")
    print(f"{ckpt}: {ckpt.stat().st_size / 2**30:.2f} GiB")
    picklescan = shutil.which("picklescan", path=str(Path(PYTHON).parent)) or shutil.which("picklescan")
    rows = []
    if picklescan:
        rows.append(measure("picklescan -p", [picklescan, "-p", str(ckpt)], runs=args.runs))
    else:
        print("picklescan is not installed (dev extra): no comparison")
    rows.append(measure("assetkit scan --json", assetkit_cmd("scan", "--json", str(ckpt)), runs=args.runs))
    print_table("scan a 2 GB torch zip checkpoint (ratio to picklescan; target <= 1.5)", rows)
    if not args.keep:
        ckpt.unlink()


if __name__ == "__main__":
    main()
