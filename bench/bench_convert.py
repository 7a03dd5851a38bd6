"""Benchmark: ``assetkit convert`` (pickle checkpoint -> safetensors) against ``cp`` and torch.

On a ~2 GB fp16 and a ~4 GB fp32 SD 1.5 torch zip checkpoint (real key names and shapes from
../shared/layouts/sd15.json, random data, written by ``torch.save`` under ``--workdir`` and
reused when present), each command runs as a whole process, once to warm up, then measured:

* ``cp SRC DST`` (the floor: the same bytes moved, no fsync) and ``cp`` + ``sync DST``
  (the same durability guarantee assetkit gives: data on disk before the rename);
* the sha256 of the source with Python's hashlib (OpenSSL), as assetkit computes it: the
  provenance hash it records costs one full read and hash of the source;
* ``assetkit convert SRC DST`` (scan, stream, sha256, fsync, verify every tensor) and with
  ``--no-verify``;
* ``torch.load(mmap=True, weights_only=True)`` + ``safetensors.torch.save_file`` (what users run).

Prints wall time, peak RSS per process and the ratio to ``cp``. Page caches cannot be dropped
here: every command reads a warm source.

Usage: ``python bench/bench_convert.py [--workdir DIR] [--runs N] [--only fp16|fp32] [--keep]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    DEFAULT_WORKDIR,
    PYTHON,
    Measurement,
    assetkit_cmd,
    ensure_torch_checkpoint,
    measure,
    print_table,
)

TORCH_CONVERT = (
    "import sys, torch\n"
    "from safetensors.torch import save_file\n"
    "sd = torch.load(sys.argv[1], mmap=True, weights_only=True, map_location='cpu')\n"
    "sd = sd.get('state_dict', sd)\n"
    "save_file(sd, sys.argv[2], metadata={'format': 'pt'})\n"
)
SHA256 = (
    "import hashlib, sys\n"
    "with open(sys.argv[1], 'rb') as fh:\n"
    "    print(hashlib.file_digest(fh, 'sha256').hexdigest())\n"
)
CP_SYNC = 'cp "$1" "$2" && sync "$2"'
CHECKPOINTS = {"fp16": ("sd15-fp16.ckpt", "F16"), "fp32": ("sd15-fp32.ckpt", "F32")}


def bench_one(source: Path, out_dir: Path, runs: int) -> tuple[list[dict], dict[str, Measurement]]:
    dst = out_dir / (source.stem + ".safetensors")

    def clear() -> None:
        dst.unlink(missing_ok=True)
        for stale in out_dir.glob(f".{dst.name}.*.tmp"):
            stale.unlink()

    commands = [
        ("cp", ["cp", str(source), str(dst)]),
        ("cp + sync (fsync)", ["sh", "-c", CP_SYNC, "sh", str(source), str(dst)]),
        ("sha256 of the source (hashlib)", [PYTHON, "-c", SHA256, str(source)]),
        ("assetkit convert", assetkit_cmd("convert", str(source), str(dst))),
        ("assetkit convert --no-verify", assetkit_cmd("convert", "--no-verify", str(source), str(dst))),
        ("torch.load(mmap) + save_file", [PYTHON, "-c", TORCH_CONVERT, str(source), str(dst)]),
    ]
    rows = {label: measure(label, cmd, runs=runs, warmup=1, before_each=clear) for label, cmd in commands}
    clear()
    size_gb = source.stat().st_size / 1e9
    table = print_table(f"{source.name} ({size_gb:.2f} GB)", list(rows.values()), baseline=rows["cp"])
    sync = rows["cp + sync (fsync)"]
    for label in ("assetkit convert", "assetkit convert --no-verify"):
        print(f"{label}: {rows[label].median / sync.median:.2f}x cp+sync, "
              f"{rows[label].median / rows['cp'].median:.2f}x cp, peak {rows[label].rss:.0f} MiB")
    return table, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--runs", type=int, default=1, help="measured runs per command (after one warm-up)")
    parser.add_argument("--only", choices=sorted(CHECKPOINTS), help="run one checkpoint only")
    parser.add_argument("--keep", action="store_true", help="keep the generated checkpoints for later runs")
    args = parser.parse_args()

    out_dir = args.workdir / "convert-out"
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    created: list[Path] = []
    try:
        for key in [args.only] if args.only else list(CHECKPOINTS):
            name, dtype = CHECKPOINTS[key]
            path = args.workdir / name
            if not path.exists():
                created.append(path)
            ensure_torch_checkpoint(path, "sd15", dtype)
            results[key], _ = bench_one(path, out_dir, args.runs)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        if not args.keep:
            for path in created:  # files another benchmark left here are not ours to delete
                path.unlink(missing_ok=True)
    print("\nJSON:", json.dumps(results))


if __name__ == "__main__":
    main()
