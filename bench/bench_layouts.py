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

Rounds are interleaved (``cp`` + ``sync``, to diffusers, back, in each round, with a ``sync`` and a
pause before every command) and each ratio to ``cp`` + ``sync`` is the median of the per-round
ratios: the shared disk's write speed here drifts by 2-3x over minutes, and back-to-back blocks of
one command would measure the drift. Prints wall time, CPU time, peak RSS and those ratios; the
diffusers route runs once (it is 5-10x slower). Page caches cannot be dropped here: every command
reads a warm source.

Usage: ``python bench/bench_layouts.py [--workdir DIR] [--runs N] [--only sd15|sdxl]`` (on disk at
once: the source, the folder and one output; SDXL about 21 GB)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    DEFAULT_WORKDIR,
    PYTHON,
    Measurement,
    assetkit_cmd,
    measure,
    print_table,
    run_timed,
    user_env,
)

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
    "from assetkit.formats.safetensors_writer import SafetensorsWriter, TensorSpec\n"
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


def settle() -> None:
    """Flush what earlier commands left dirty, so that no command pays for another's writes."""
    os.sync()
    time.sleep(1.0)


def bench_case(case: str, workdir: Path, runs: int) -> dict:
    """Interleaved rounds: each round runs ``cp`` + ``sync``, ``--to diffusers`` and ``--to single-file``
    back to back, so the ratios compare commands that saw the same disk (a shared disk's write
    speed drifts by 2-3x over minutes here). On disk at once: the source, the folder and one
    output (SDXL: about 21 GB)."""
    layout, config_id, pipeline_class = CASES[case]
    src = ensure_random(workdir / f"{case}-random-fp16.safetensors", layout)
    size = src.stat().st_size
    copy, folder, back, theirs = (workdir / f"{case}-cp.safetensors", workdir / f"{case}-diffusers",
                                  workdir / f"{case}-back.safetensors", workdir / f"{case}-diffusers-route")
    configs = REPO / "registry" / "configs" / config_id
    env = user_env()
    cp_cmd = ["sh", "-c", CP_SYNC, "sh", str(src), str(copy)]
    fwd_cmd = assetkit_cmd("convert", str(src), str(folder), "--to", "diffusers")
    back_cmd = assetkit_cmd("convert", str(folder), str(back), "--to", "single-file")
    rows = {key: Measurement(label, [], []) for key, label in (
        ("cp", "cp + sync"), ("fwd", "assetkit convert --to diffusers"),
        ("back", "assetkit convert --to single-file"))}
    cpu = {key: [] for key in rows}
    ratios: dict[str, list[float]] = {"fwd": [], "back": []}
    for _ in range(runs):
        for key, cmd, out in (("cp", cp_cmd, copy), ("fwd", fwd_cmd, folder), ("back", back_cmd, back)):
            remove(out)
            settle()
            wall, rss, cpu_s = run_timed(cmd, env)
            rows[key].wall_s.append(wall)
            rows[key].peak_rss_mib.append(rss)
            cpu[key].append(cpu_s)
        remove(copy)
        for key in ratios:
            ratios[key].append(rows[key].wall_s[-1] / rows["cp"].wall_s[-1])
    same = "round trip bit-identical" if digests(back) == digests(src) else "ROUND TRIP DIFFERS"
    print(same)
    remove(back)
    remove(folder)
    settle()
    route = measure("diffusers from_single_file + save_pretrained",
                    [PYTHON, "-c", DIFFUSERS_ROUTE, str(src), str(theirs), pipeline_class, str(configs)],
                    runs=1, warmup=0, before_each=lambda: remove(theirs))
    remove(theirs)
    table = print_table(f"{case}: {size / 2**30:.2f} GiB single file <-> diffusers folder",
                        [rows["cp"], rows["fwd"], rows["back"], route], baseline=rows["cp"])
    summary = {}
    for key in ratios:
        row = rows[key]
        summary[key] = {"ratio_to_cp_sync": statistics.median(ratios[key]),
                        "ratio_to_diffusers_route": row.median / route.median, "peak_rss_mib": row.rss,
                        "cpu_s": statistics.median(cpu[key])}
        print(f"{row.label}: median {row.median:.2f} s; {statistics.median(ratios[key]):.2f}x cp+sync (median of "
              f"{runs} interleaved rounds: {', '.join(f'{r:.2f}' for r in ratios[key])}); "
              f"{row.median / route.median:.2f}x the diffusers route; CPU {statistics.median(cpu[key]):.2f} s "
              f"(cp+sync {statistics.median(cpu['cp']):.2f} s); peak {row.rss:.0f} MiB")
    return {"case": case, "bytes": size, "rows": table, "summary": summary, "round_trip": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--runs", type=int, default=3)
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
