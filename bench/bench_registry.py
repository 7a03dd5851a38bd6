"""Benchmark: the registry, as whole processes, against what a user would otherwise run.

1. ``assetkit registry add`` of a ~2 GB single-file checkpoint (SD 1.5 layout from
   ../shared/layouts/sd15.json, fp16, random data: split into UNet, VAE and text encoder
   components, a recipe kept) against ``cp SRC DST && sha256sum DST`` (a copy into a folder of
   models and the hash a user checks against Civitai/the Hub). Each add goes to a fresh registry.
2. ``assetkit registry ls`` of a registry holding 10,000 assets, as a whole process, beside
   ``python -c pass`` (the interpreter's own start-up) for scale.
3. Ten SDXL-layout fine-tunes that share the VAE and both text encoders (each has its own UNet):
   bytes on disk of the registry against the sum of the inputs. ``--finetunes tiny`` (default)
   uses the real SDXL names at tiny shapes; ``--finetunes full`` the real shapes (6.9 GB files,
   zero-filled and sparse, a few random bytes per UNet: blobs keep the holes, so this costs the
   hashing time, not the disk).

Usage: ``python bench/bench_registry.py [--workdir DIR] [--runs N] [--only add|ls|finetunes]
[--finetunes tiny|full] [--keep]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    DEFAULT_WORKDIR,
    PYTHON,
    assetkit_cmd,
    ensure_sparse_safetensors,
    load_layout,
    measure,
    print_table,
)

CP_SHA = 'cp "$1" "$2" && sha256sum "$2" > /dev/null'


def random_safetensors(path: Path, layout: str, dtype: str = "F16", seed: int = 0) -> Path:
    """A full-size safetensors file of ``layout`` (floats in ``dtype``) with random data, streamed."""
    if path.exists():
        return path
    import numpy as np

    from assetkit.formats.safetensors_writer import SafetensorsWriter, TensorSpec

    keys = load_layout(layout)
    specs = [TensorSpec(name, info["dtype"] if info["dtype"] not in ("F32", "F16", "BF16") else dtype,
                        tuple(info["shape"])) for name, info in keys.items()]
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"writing {path} (random data) ...", flush=True)
    with SafetensorsWriter(path, specs, {"format": "pt"}, overwrite=True) as writer:
        for spec in specs:
            left = spec.nbytes
            while left:
                n = min(left, 64 << 20)
                writer.write(rng.bytes(n))
                left -= n
    return path


def bench_add(work: Path, runs: int) -> list[dict]:
    src = random_safetensors(work / "sd15-fp16-random.safetensors", "sd15")
    size = src.stat().st_size
    reg, dst = work / "reg-add", work / "cp-dst" / src.name

    def fresh_registry() -> None:
        shutil.rmtree(reg, ignore_errors=True)

    def fresh_copy() -> None:
        dst.unlink(missing_ok=True)
        dst.parent.mkdir(parents=True, exist_ok=True)

    base = measure("cp + sha256sum", ["bash", "-c", CP_SHA, "_", str(src), str(dst)], runs=runs,
                   before_each=fresh_copy)
    ours = measure("assetkit registry add", assetkit_cmd("registry", "add", str(src), "--root", str(reg)), runs=runs,
                   before_each=fresh_registry)
    rows = print_table(f"add of a {size / 1e9:.2f} GB single file (SD 1.5 layout, fp16, random)", [base, ours], base)
    stored = sum(p.stat().st_blocks * 512 for p in (reg / "objects").rglob("*") if p.is_file())
    print(f"  stored {stored / 1e9:.2f} GB of blobs for a {size / 1e9:.2f} GB file "
          f"(components + header + extras)")
    dst.unlink(missing_ok=True)
    return rows


def _fill_index(root: Path, count: int) -> None:
    """``count`` assets in the index, through the registry's own insert (one transaction)."""
    from assetkit import Registry
    from assetkit.registry import index
    from assetkit.registry.add import _Planned
    from assetkit.registry.records import FileRecord

    reg = Registry(root)
    blob = reg.store.put_bytes(b"tiny shared blob")
    kinds = ["lora", "vae", "textual_inversion", "controlnet", "pipeline"]
    with index.transaction(reg.conn) as conn:
        for i in range(count):
            sha = f"{i:064x}"
            planned = _Planned(name=f"asset-{i:05d}", kind=kinds[i % 5], family="sdxl" if i % 2 else "sd1",
                               probe={}, source_format="safetensors", storage="whole", sha256=sha, size=1000 + i,
                               files=[FileRecord(f"asset-{i:05d}.safetensors", sha, 1000 + i, blob)],
                               hashes=[("sha256", sha, ""), ("autov2", sha[:10], "")], blobs={blob: 16},
                               tags=("bench",) if i % 3 == 0 else ())
            reg._insert_row(conn, planned)
    reg.close()


def bench_ls(work: Path, runs: int) -> list[dict]:
    root = work / "reg-ls"
    if not (root / "index.sqlite").exists():
        _fill_index(root, 10_000)
    start = measure("python -c pass", [PYTHON, "-c", "pass"], runs=runs)
    ours = measure("assetkit registry ls (10,000)", assetkit_cmd("registry", "ls", "--root", str(root)), runs=runs)
    js = measure("assetkit registry ls --json", assetkit_cmd("registry", "ls", "--json", "--root", str(root)),
                 runs=runs)
    return print_table("ls of 10,000 assets, whole process", [start, ours, js], start)


def _unet_offset(path: Path) -> int:
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    first = min((v["data_offsets"][0], k) for k, v in header.items()
                if k != "__metadata__" and k.startswith("model.diffusion_model."))
    return 8 + n + first[0]


def bench_finetunes(work: Path, size: str) -> dict:
    folder = work / f"finetunes-{size}"
    folder.mkdir(parents=True, exist_ok=True)
    if size == "full":
        base = ensure_sparse_safetensors(folder / "base.safetensors", "sdxl_base")
    else:
        from assetkit.factory import make_fixture

        base = folder / "sdxl_base.safetensors"
        if not base.exists():
            base = make_fixture("sdxl_base", folder, "safetensors")
    offset = _unet_offset(base)
    inputs = []
    for i in range(10):
        path = folder / f"finetune-{i}.safetensors"
        if not path.exists():
            subprocess.run(["cp", "--sparse=always", str(base), str(path)], check=True)
            with open(path, "r+b") as fh:  # its own UNet: other bytes in its first tensor
                fh.seek(offset)
                fh.write(os.urandom(64))
        inputs.append(path)
    root = work / f"reg-finetunes-{size}"
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    for path in inputs:
        subprocess.run(assetkit_cmd("registry", "add", str(path), "--root", str(root)), check=True,
                       stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    du = json.loads(subprocess.run(assetkit_cmd("registry", "du", "--json", "--root", str(root)), check=True,
                                   capture_output=True, text=True).stdout)
    total_in = sum(p.stat().st_size for p in inputs)
    unet_blobs = {json.loads(subprocess.run(assetkit_cmd("registry", "show", f"finetune-{i}.unet", "--json", "--root",
                                                         str(root)), capture_output=True, text=True,
                                            check=True).stdout)["canonical_sha256"] for i in range(10)}
    shared = {json.loads(subprocess.run(assetkit_cmd("registry", "show", f"finetune-{i}.vae", "--json", "--root",
                                                     str(root)), capture_output=True, text=True,
                                        check=True).stdout)["canonical_sha256"] for i in range(10)}
    print(f"\nten SDXL-layout fine-tunes ({size}), shared VAE and text encoders, added in {seconds:.1f} s")
    print(f"  inputs   {total_in:>16,} bytes (10 files)")
    print(f"  registry {du['disk_bytes']:>16,} bytes of blobs ({du['blobs']} blobs): "
          f"{du['disk_bytes'] / total_in:.3f} of the inputs; {len(unet_blobs)} UNet blobs, {len(shared)} VAE blob")
    one = inputs[0].stat().st_size
    print(f"  ideal (10 UNets + 1 VAE + 1 pair of text encoders) ~ {(one + 9 * (one - _shared_bytes(base))):,} bytes")
    return {"inputs": total_in, "disk": du["disk_bytes"], "ratio": du["disk_bytes"] / total_in,
            "unet_blobs": len(unet_blobs), "vae_blobs": len(shared), "seconds": seconds}


def _shared_bytes(path: Path) -> int:
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    return sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items()
               if k != "__metadata__" and not k.startswith("model.diffusion_model."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR / "registry")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--only", choices=["add", "ls", "finetunes"])
    parser.add_argument("--finetunes", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--keep", action="store_true", help="Keep the inputs and registries under --workdir.")
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    try:
        if args.only in (None, "ls"):
            results["ls"] = bench_ls(work, max(args.runs, 3))
        if args.only in (None, "finetunes"):
            results["finetunes"] = bench_finetunes(work, args.finetunes)
        if args.only in (None, "add"):
            results["add"] = bench_add(work, args.runs)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    out = DEFAULT_WORKDIR / "bench_registry.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
