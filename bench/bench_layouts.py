"""Benchmark: ``assetkit convert --to diffusers`` and ``--to single-file`` on full-size SD1.5 and
SDXL layouts, against ``cp`` + ``sync`` and against diffusers' own route.

Inputs: random fp16 safetensors with the real names and shapes of ../shared/layouts/sd15.json
and sdxl_base.json (written under ``--workdir`` by a child process, reused when present). Each
command runs as a whole process:

* ``cp SRC DST && sync DST`` (the floor with the durability assetkit gives);
* ``assetkit convert SRC OUT --to diffusers`` (probe, plan, stream, fsync every file);
* ``DiffusionPipeline.from_single_file(SRC, config=<catalogue configs>, local_files_only=True,
  torch_dtype=float16)`` + ``save_pretrained(OUT)`` (what a diffusers user runs offline);
* ``assetkit convert OUT BACK --to single-file`` (diffusers has no API for this direction; its
  repository script is not part of the package), against ``cp`` + ``sync`` of the same bytes.

Prints wall time, peak RSS and the ratio to ``cp`` + ``sync``. Page caches cannot be dropped
here: every command reads a warm source.

Usage: ``python bench/bench_layouts.py [--workdir DIR] [--runs N] [--only sd15|sdxl]`` (the sources are
removed on the way: at most the source and one output are on disk at once)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import DEFAULT_WORKDIR, PYTHON, assetkit_cmd, measure, print_table  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CP_SYNC = 'cp "$1" "$2" && sync "$2"'
CASES = {"sd15": ("sd15", "sd1", "StableDiffusionPipeline"), "sdxl": ("sdxl_base", "sdxl", "StableDiffusionXLPipeline")}
DIFFUSERS_ROUTE = (
    "import sys, torch, diffusers\n"
    "from diffusers.utils import logging\n"
    "logging.set_verbosity_error()\n"
    "cls = getattr(diffusers, sys.argv[3])\n"
    "pipe = cls.from_single_file(sys.argv[1], config=sys.argv[4], local_files_only=True, torch_dtype=torch.float16)\n"
    "pipe.save_pretrained(sys.argv[2])\n"
)
BUILD = (
    "import sys, json, numpy as np\n"
    "from assetkit.formats.safetensors import SafetensorsWriter, TensorSpec\n"
    "keys = json.load(open(sys.argv[2]))['keys']\n"
    "dt = lambda d: 'F16' if d in ('F32', 'F16', 'BF16') else d\n"
    "specs = [TensorSpec(n, dt(i['dtype']), tuple(i['shape'])) for n, i in keys.items()]\n"
    "rng = np.random.default_rng(0)\n"
    "with SafetensorsWriter(sys.argv[1], specs) as w:\n"
    "    for s in specs:\n"
    "        n = int(np.prod(s.shape)) if s.shape else 1\n"
    "        if s.dtype == 'F16':\n"
    "            for a in range(0, n, 1 << 24):\n"
    "                w.write(rng.standard_normal(min(1 << 24, n - a), dtype=np.float32).astype('<f2'))\n"
    "        else:\n"
    "            w.write(np.zeros(n, dtype={'I64': '<i8', 'F64': '<f8'}[s.dtype]))\n"
)


def ensure_random(path: Path, layout: str) -> Path:
    if not path.exists():
        print(f"writing {path} (random fp16) ...", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([PYTHON, "-c", BUILD, str(path), str(REPO.parent / "shared" / "layouts" / f"{layout}.json")],
                       check=True)
    return path


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


DIGESTS = (
    "import sys, json, hashlib\n"
    "from safetensors import safe_open\n"
    "with safe_open(sys.argv[1], 'np') as fh:\n"
    "    print(json.dumps({k: hashlib.sha256(fh.get_tensor(k).tobytes()).hexdigest() for k in fh.keys()}))\n"
)


def digests(path: Path) -> dict[str, str]:
    """sha256 of every tensor (a child process, so no memory enters the measuring process)."""
    out = subprocess.run([PYTHON, "-c", DIGESTS, str(path)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def bench_case(case: str, workdir: Path, runs: int) -> dict:
    """At most two full-size copies on disk at any time: the source and one output (SDXL ~7 GB each)."""
    layout, config_id, pipeline_class = CASES[case]
    src = ensure_random(workdir / f"{case}-random-fp16.safetensors", layout)
    size = src.stat().st_size
    copy, folder, back, theirs = (workdir / f"{case}-cp.safetensors", workdir / f"{case}-diffusers",
                                  workdir / f"{case}-back.safetensors", workdir / f"{case}-diffusers-route")
    configs = REPO / "registry" / "configs" / config_id
    cp_sync = measure("cp + sync", ["sh", "-c", CP_SYNC, "sh", str(src), str(copy)], runs=runs, warmup=0,
                      before_each=lambda: remove(copy))
    remove(copy)
    route = measure("diffusers from_single_file + save_pretrained",
                    [PYTHON, "-c", DIFFUSERS_ROUTE, str(src), str(theirs), pipeline_class, str(configs)],
                    runs=1, warmup=0, before_each=lambda: remove(theirs))
    remove(theirs)
    to_diffusers = measure("assetkit convert --to diffusers",
                           assetkit_cmd("convert", str(src), str(folder), "--to", "diffusers"),
                           runs=runs, warmup=0, before_each=lambda: remove(folder))
    before = digests(src)
    remove(src)
    to_single = measure("assetkit convert --to single-file",
                        assetkit_cmd("convert", str(folder), str(back), "--to", "single-file"),
                        runs=runs, warmup=0, before_each=lambda: remove(back))
    same = "round trip bit-identical" if digests(back) == before else "ROUND TRIP DIFFERS"
    print(same)
    remove(back)
    remove(folder)
    table = print_table(f"{case}: {size / 2**30:.2f} GiB single file <-> diffusers folder",
                        [cp_sync, to_diffusers, to_single, route], baseline=cp_sync)
    for row in (to_diffusers, to_single):
        print(f"{row.label}: median {row.median:.2f} s, {row.median / cp_sync.median:.2f}x cp+sync, "
              f"{row.median / route.median:.2f}x the diffusers route, peak {row.rss:.0f} MiB")
    return {"case": case, "bytes": size, "rows": table, "round_trip": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--only", choices=sorted(CASES))
    args = parser.parse_args()
    results = []
    for case in ([args.only] if args.only else list(CASES)):
        results.append(bench_case(case, args.workdir, args.runs))
    out = args.workdir / "bench_layouts.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
