"""Benchmark: team remote transfers against a loopback S3 server (moto's server, its own process).

1. A 2 GiB random blob: ``S3BlobStore.put_file`` (what ``registry push`` does per blob: HEAD, SHA256
   per part, parallel multipart, conditional complete, composite checksum read back) vs plain
   boto3 ``upload_file`` with default settings; and the pull path (parallel ranged GETs hashed in
   order into the local store's verify-then-rename ``put_stream``, fsync included) vs boto3
   ``download_file`` with default settings. Same run, same server, alternating, ``--runs`` each.
   Target (issue 11): within 1.2x of boto3.
2. Ten SDXL-layout fine-tunes (tiny shapes, real key names) sharing VAE and text encoders, added
   to a registry (split into components) and pushed with ``--all``: bytes sent vs the sum of the
   inputs, and vs the unique blob bytes (what must be sent at least once).

    python bench/bench_remote.py [--workdir bench/out] [--size-gib 2] [--runs 2] [--fine-tunes 10]

Everything stays on 127.0.0.1; dummy credentials are set for this process only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import DEFAULT_WORKDIR, PYTHON  # noqa: E402

MiB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto(workdir: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = open(workdir / "moto.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([PYTHON, "-c", "from moto.server import main; main()", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=log, stderr=subprocess.STDOUT)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise SystemExit("moto server did not start")
    return proc, f"http://127.0.0.1:{port}"


def random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    if path.exists() and path.stat().st_size == size:
        with open(path, "rb") as fh:
            while chunk := fh.read(16 * MiB):
                digest.update(chunk)
        return digest.hexdigest()
    with open(path, "wb") as fh:
        left = size
        while left:
            chunk = os.urandom(min(16 * MiB, left))
            digest.update(chunk)
            fh.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def timed(func) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def bench_blob(endpoint: str, workdir: Path, size: int, runs: int) -> dict:
    import boto3

    from assetkit.registry import LocalBlobStore
    from assetkit.registry.remote import RemoteSpec, S3BlobStore

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="bench")
    blob = workdir / "remote-blob.bin"
    print(f"writing {size / 2**30:.2f} GiB of random data ...", flush=True)
    sha = random_file(blob, size)
    store = S3BlobStore(RemoteSpec.parse("s3://bench/team", endpoint_url=endpoint, region="us-east-1"))
    local = LocalBlobStore(workdir / "remote-local-objects")
    times: dict[str, list[float]] = {"boto3 upload_file": [], "assetkit push (put_file)": [],
                                     "boto3 download_file": [], "assetkit pull (verified into store)": []}
    dest = workdir / "remote-download.bin"
    for run in range(runs):
        for label in (("boto3 upload_file", "assetkit push (put_file)") if run % 2 == 0
                      else ("assetkit push (put_file)", "boto3 upload_file")):
            if label.startswith("boto3"):
                client.delete_object(Bucket="bench", Key="plain/blob")
                times[label].append(timed(lambda: client.upload_file(str(blob), "bench", "plain/blob")))
            else:
                store.delete_blob(sha)
                times[label].append(timed(lambda: store.put_file(blob, sha)))
            print(f"  {label}: {times[label][-1]:.2f} s", flush=True)
        for label in (("boto3 download_file", "assetkit pull (verified into store)") if run % 2 == 0
                      else ("assetkit pull (verified into store)", "boto3 download_file")):
            if label.startswith("boto3"):
                dest.unlink(missing_ok=True)
                times[label].append(timed(lambda: client.download_file("bench", "plain/blob", str(dest))))
                dest.unlink()
            else:
                local.delete(sha) if local.has(sha) else None
                times[label].append(timed(lambda: local.put_stream(store.iter_chunks(sha), sha)))
                assert local.verify(sha)
                local.delete(sha)
            print(f"  {label}: {times[label][-1]:.2f} s", flush=True)
    store.delete_blob(sha)
    client.delete_object(Bucket="bench", Key="plain/blob")
    best = {label: min(values) for label, values in times.items()}
    rows = {"size_bytes": size, "runs": runs, "seconds": times, "best_s": best,
            "push_ratio": best["assetkit push (put_file)"] / best["boto3 upload_file"],
            "pull_ratio": best["assetkit pull (verified into store)"] / best["boto3 download_file"]}
    print(f"\n== {size / 2**30:.2f} GiB blob over loopback S3 (best of {runs})")
    for label, value in best.items():
        print(f"{label:<40} {value:>8.2f} s  {size / value / MiB:>8.1f} MiB/s")
    print(f"push / upload_file   = {rows['push_ratio']:.2f}x")
    print(f"pull / download_file = {rows['pull_ratio']:.2f}x")
    return rows


def bench_fine_tunes(endpoint: str, workdir: Path, count: int) -> dict:
    import boto3
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from assetkit.factory import make_fixture
    from assetkit.registry import Registry
    from assetkit.registry.remote import RemoteSpec, S3BlobStore
    from assetkit.registry.remote.transfer import push

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="finetunes")
    folder = workdir / "remote-fine-tunes"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    base = make_fixture("sdxl_base", folder, "safetensors", filename="base.safetensors")
    tensors = load_file(str(base))
    inputs = []
    for n in range(count):
        tuned = {k: (v + np.asarray(n + 1, dtype=v.dtype) if k.startswith("model.diffusion_model.")
                     and v.dtype.kind == "f" else v) for k, v in tensors.items()}
        path = folder / f"sdxl-ft-{n:02d}.safetensors"
        save_file(tuned, str(path))
        inputs.append(path)
    registry = Registry(folder / "registry")
    for path in inputs:
        registry.add(path, name=path.stem)
    remote = S3BlobStore(RemoteSpec.parse("s3://finetunes/team", endpoint_url=endpoint, region="us-east-1"))
    start = time.perf_counter()
    result = push(registry, remote, None)
    seconds = time.perf_counter() - start
    assert result.ok, result.failed
    needed = set().union(*(registry.manifest(p.stem)["blobs"] for p in inputs))
    unique = sum(registry.store.size(s) for s in needed)
    total_in = sum(p.stat().st_size for p in inputs)
    unet = sum(sum(registry.manifest(f"{p.stem}.unet")["own_blobs"].values()) for p in inputs)
    rows = {"fine_tunes": count, "sum_of_inputs": total_in, "bytes_sent": result.stats.bytes,
            "unique_blob_bytes": unique, "unet_bytes_total": unet, "objects_sent": result.stats.objects,
            "skipped": result.stats.skipped, "seconds": seconds}
    print(f"\n== {count} SDXL-layout fine-tunes sharing VAE and text encoders (tiny shapes, real names)")
    print(f"sum of inputs        {total_in:>14,d} bytes")
    print(f"bytes sent           {result.stats.bytes:>14,d} bytes  ({result.stats.bytes / total_in:.1%} of the inputs)")
    print(f"unique blob bytes    {unique:>14,d} bytes  (sent == unique: {result.stats.bytes == unique})")
    print(f"of which UNets       {unet:>14,d} bytes; {result.stats.objects} objects sent, "
          f"{result.stats.skipped} found already on the remote; {seconds:.1f} s")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--fine-tunes", type=int, default=10)
    parser.add_argument("--skip-blob", action="store_true", help="only the fine-tunes part")
    parser.add_argument("--keep", action="store_true", help="keep the random blob for later runs")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                       "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull})
    server, endpoint = start_moto(args.workdir)
    report: dict = {}
    try:
        if not args.skip_blob:
            report["blob"] = bench_blob(endpoint, args.workdir, int(args.size_gib * 2**30), args.runs)
        report["fine_tunes"] = bench_fine_tunes(endpoint, args.workdir, args.fine_tunes)
    finally:
        server.terminate()
        server.wait(30)
        if not args.keep:
            (args.workdir / "remote-blob.bin").unlink(missing_ok=True)
        shutil.rmtree(args.workdir / "remote-local-objects", ignore_errors=True)
        shutil.rmtree(args.workdir / "remote-fine-tunes", ignore_errors=True)
    (args.workdir / "bench_remote.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
