"""Push and pull between real registries (SQLite + files) and a real S3 API server on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import threading
from pathlib import Path

import _s3_helpers
import pytest
from _s3_helpers import S3Bucket
from safetensors.numpy import load_file, save_file

from assetkit import open_asset
from assetkit.convert import plan_diffusers_to_single_file, write_single_file
from assetkit.registry import Registry
from assetkit.registry.remote import RemoteSpec, S3BlobStore
from assetkit.registry.remote.transfer import (
    TransferStats,
    find_remote,
    gc_remote,
    ls_remote,
    pull,
    push,
    verify_remote,
)

s3_server, s3_bucket = _s3_helpers.s3_server, _s3_helpers.s3_bucket  # the loopback S3 fixtures

pytestmark = pytest.mark.slow  # one tiny diffusers pipeline is saved by diffusers for the module


@pytest.fixture(scope="module")
def fine_tunes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two SD1 pipeline folders sharing VAE, text encoder, tokenizer and scheduler; other UNets."""
    from assetkit.factory.diffusers_models import save_tiny_sd1_pipeline

    root = tmp_path_factory.mktemp("fine-tunes")
    first = save_tiny_sd1_pipeline(root / "ft-a")
    second = root / "ft-b"
    shutil.copytree(first, second)
    unet = second / "unet" / "diffusion_pytorch_model.safetensors"
    tensors = {name: array + 1 for name, array in load_file(str(unet)).items()}
    save_file(tensors, str(unet), metadata={"format": "pt"})
    return {"ft-a": first, "ft-b": second}


def remote_for(bucket: S3Bucket) -> S3BlobStore:
    return S3BlobStore(RemoteSpec.parse(bucket.url("team"), endpoint_url=bucket.endpoint_url, region="us-east-1"))


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_push_then_pull_on_an_empty_registry_is_byte_identical(s3_bucket: S3Bucket, tmp_path: Path,
                                                              fine_tunes: dict[str, Path]) -> None:
    laptop = Registry(tmp_path / "laptop")
    laptop.add(fine_tunes["ft-a"], name="ft-a")
    single = tmp_path / "vae.safetensors"
    shutil.copy(fine_tunes["ft-a"] / "vae" / "diffusion_pytorch_model.safetensors", single)
    laptop.add(single, name="solo-vae")
    checkpoint = tmp_path / "sd15-fine-tune.safetensors"  # an original-layout single file, by the converter
    with open_asset(fine_tunes["ft-a"]) as asset:
        write_single_file(plan_diffusers_to_single_file(asset), asset, checkpoint)
    added = laptop.add(checkpoint, name="sd15-ft", config=fine_tunes["ft-a"]).record
    assert added.storage == "components"  # split into components, the file kept as a recipe
    names = ["ft-a", "solo-vae", "sd15-ft"]
    pushed = push(laptop, remote_for(s3_bucket), names)
    assert pushed.ok and [a["name"] for a in pushed.assets] == names
    assert pushed.stats.objects == len(set().union(*(laptop.manifest(n)["blobs"] for n in names)))

    runner = Registry(tmp_path / "ci-runner")
    assert runner.ls() == []
    pulled = pull(runner, remote_for(s3_bucket), names)
    assert pulled.ok, pulled.failed
    assert pulled.stats.bytes == pushed.stats.bytes  # every byte that went up came down once
    assert {a["name"] for a in runner.ls()} == set(names)
    for sha in runner.manifest("ft-a")["blobs"]:
        assert runner.store.verify(sha)
    # What the CI runner exports is what the laptop added, byte for byte.
    out_folder = tmp_path / "export-ft-a"
    runner.export("ft-a", out_folder)
    assert tree_bytes(out_folder) == tree_bytes(fine_tunes["ft-a"])
    out_file = tmp_path / "export-vae.safetensors"
    runner.export("solo-vae", out_file)
    assert sha256_of(out_file) == sha256_of(single)
    rebuilt = tmp_path / "export-sd15.safetensors"
    runner.export("sd15-ft", rebuilt, form="file")
    assert sha256_of(rebuilt) == sha256_of(checkpoint)  # the single file, rebuilt from its recipe
    # A second pull finds everything present and sends nothing.
    again = pull(runner, remote_for(s3_bucket), ["ft-a"])
    assert again.ok and again.stats.bytes == 0 and again.stats.skipped == len(runner.manifest("ft-a")["blobs"])
    # Both registries verify clean: a pulled recipe references every blob it reads.
    for registry in (laptop, runner):
        report = registry.verify()
        assert report.ok, [f.message for f in report.findings]


def test_second_fine_tune_uploads_only_its_unet(s3_bucket: S3Bucket, tmp_path: Path,
                                                fine_tunes: dict[str, Path]) -> None:
    laptop = Registry(tmp_path / "laptop")
    laptop.add(fine_tunes["ft-a"], name="ft-a")
    laptop.add(fine_tunes["ft-b"], name="ft-b")
    first = push(laptop, remote_for(s3_bucket), ["ft-a"])
    second = push(laptop, remote_for(s3_bucket), ["ft-b"])
    a_blobs, b_blobs = set(laptop.manifest("ft-a")["blobs"]), set(laptop.manifest("ft-b")["blobs"])
    unet_blobs = set(laptop.manifest("ft-b.unet")["own_blobs"])
    own_blobs = set(laptop.manifest("ft-b")["own_blobs"])  # model_index.json of the pipeline itself
    new = b_blobs - a_blobs
    assert new and new <= unet_blobs | own_blobs  # only the UNet (and nothing of VAE, text encoder...)
    for role in ("vae", "text_encoder", "tokenizer", "scheduler"):
        assert set(laptop.manifest(f"ft-a.{role}")["blobs"]) <= a_blobs & b_blobs
    weights = unet_blobs - a_blobs
    assert weights  # the UNet weights differ
    assert second.stats.objects == len(new) and second.stats.bytes == sum(laptop.store.size(s) for s in new)
    assert second.stats.skipped == len(a_blobs & b_blobs) > 0
    assert first.stats.bytes + second.stats.bytes == sum(
        laptop.store.size(s) for s in set(laptop.manifest("ft-a")["blobs"]) | set(laptop.manifest("ft-b")["blobs"]))
    assert sorted(s["name"] for s in ls_remote(remote_for(s3_bucket))) == ["ft-a", "ft-b"]


def test_two_concurrent_pushes_of_the_same_asset(s3_bucket: S3Bucket, tmp_path: Path,
                                                 fine_tunes: dict[str, Path]) -> None:
    machines = []
    for name in ("alice", "bob"):
        registry = Registry(tmp_path / name)
        registry.add(fine_tunes["ft-a"], name="ft-a")
        machines.append(registry)
    results: list[object] = []
    barrier = threading.Barrier(2, timeout=60)

    def run(registry: Registry) -> None:
        barrier.wait()
        try:
            results.append(push(registry, remote_for(s3_bucket), ["ft-a"]))
        except Exception as exc:  # noqa: BLE001 - reported below
            results.append(exc)

    threads = [threading.Thread(target=run, args=(m,)) for m in machines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(getattr(r, "ok", False) for r in results), results
    remote = remote_for(s3_bucket)
    blobs = machines[0].manifest("ft-a")["blobs"]
    assert sorted(remote.iter_blobs()) == sorted(blobs)
    assert verify_remote(remote).ok
    runner = Registry(tmp_path / "runner")
    assert pull(runner, remote, ["ft-a"]).ok


class Interrupt(Exception):
    pass


def test_interrupted_push_resumes(s3_bucket: S3Bucket, tmp_path: Path, fine_tunes: dict[str, Path]) -> None:
    laptop = Registry(tmp_path / "laptop")
    laptop.add(fine_tunes["ft-a"], name="ft-a")
    blobs = laptop.manifest("ft-a")["blobs"]
    created: list[str] = []

    def stop_after_three_blobs(event: str, sha: str, _n: int) -> None:
        if event == "done":
            created.append(sha)
            if len(created) == 3:
                raise Interrupt("laptop lid closed")

    with pytest.raises(Interrupt):
        push(laptop, remote_for(s3_bucket), ["ft-a"], progress=stop_after_three_blobs)
    remote = remote_for(s3_bucket)
    assert remote.get_manifest("ft-a") is None  # no manifest before all its blobs are there
    assert sorted(remote.iter_blobs()) == sorted(created)
    resumed = push(laptop, remote, ["ft-a"])
    assert resumed.ok and resumed.stats.skipped == 3 and resumed.stats.objects == len(blobs) - 3
    assert resumed.stats.bytes == sum(laptop.store.size(s) for s in blobs if s not in created)
    assert verify_remote(remote).ok


def test_tampered_remote_object_is_refused_on_pull_and_reported(s3_bucket: S3Bucket, tmp_path: Path,
                                                                 fine_tunes: dict[str, Path]) -> None:
    laptop = Registry(tmp_path / "laptop")
    laptop.add(fine_tunes["ft-a"], name="ft-a")
    remote = remote_for(s3_bucket)
    push(laptop, remote, ["ft-a"])
    unet_blob = next(iter(laptop.manifest("ft-a.unet")["own_blobs"]))
    original = laptop.store.open(unet_blob).read()
    tampered = bytearray(original)
    tampered[-1] ^= 0xFF
    s3_bucket.client.put_object(Bucket=s3_bucket.bucket, Key=remote.key_for(unet_blob), Body=bytes(tampered))

    runner = Registry(tmp_path / "runner")
    result = pull(runner, remote_for(s3_bucket), ["ft-a"])
    assert not result.ok
    assert [(f["blob"], f["error"].split(":")[0]) for f in result.failed] == [(unet_blob, "refused")]
    assert not runner.store.has(unet_blob)
    assert list(runner.store.iter_temporary()) == []  # the temporary download was discarded
    assert runner.ls() == []  # an asset with a refused blob is not imported
    report = verify_remote(remote_for(s3_bucket))
    assert not report.ok
    assert [(f.code, f.where) for f in report.findings] == [("remote-blob-corrupt", remote.key_for(unet_blob))]
    s3_bucket.client.delete_object(Bucket=s3_bucket.bucket, Key=remote.key_for(unet_blob))
    missing = verify_remote(remote_for(s3_bucket))
    assert [f.code for f in missing.findings] == ["remote-blob-missing"]
    # Pushing again restores the object (HEAD says missing; the conditional create succeeds).
    assert push(laptop, remote, ["ft-a"]).stats.objects == 1
    assert verify_remote(remote).ok


def test_find_and_gc_on_the_remote(s3_bucket: S3Bucket, tmp_path: Path, fine_tunes: dict[str, Path]) -> None:
    laptop = Registry(tmp_path / "laptop")
    record = laptop.add(fine_tunes["ft-a"], name="ft-a").record
    remote = remote_for(s3_bucket)
    push(laptop, remote, ["ft-a"])
    unet_blob = next(iter(laptop.manifest("ft-a.unet")["own_blobs"]))
    assert [h["name"] for h in find_remote(remote, unet_blob[:12])] == ["ft-a"]
    assert find_remote(remote, "0" * 64) == []
    stray = tmp_path / "stray"
    stray.write_bytes(b"nobody references me")
    stray_sha = remote.put_file(stray)
    young = gc_remote(remote)  # default grace period: the fresh stray is kept
    assert young.unreferenced == [] and [b["sha256"] for b in young.kept_young] == [stray_sha]
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    dry = gc_remote(remote, now=later)
    assert dry.dry_run and [b["sha256"] for b in dry.unreferenced] == [stray_sha]
    assert remote.has(stray_sha)  # a dry run deletes nothing
    done = gc_remote(remote, delete=True, now=later)
    assert [b["sha256"] for b in done.unreferenced] == [stray_sha] and not remote.has(stray_sha)
    assert sorted(remote.iter_blobs()) == sorted(laptop.manifest("ft-a")["blobs"])  # referenced ones stay
    assert record.name == "ft-a"


def test_transfer_stats_counts_events() -> None:
    stats = TransferStats()
    for event, n in (("start", 10), ("sent", 6), ("sent", 4), ("done", 10), ("skip", 7), ("resumed", 3)):
        stats(event, "ab" * 32, n)
    assert stats.to_dict() == {"objects": 1, "bytes": 10, "skipped": 1, "skipped_bytes": 7, "resumed_bytes": 3,
                               "raced": 0}


def test_check_lock_on_an_empty_registry_pulls_what_it_needs(s3_bucket: S3Bucket, tmp_path: Path,
                                                              fine_tunes: dict[str, Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A CI runner with an empty cache gates a deployment from a lock file alone."""
    import json

    from click.testing import CliRunner

    from assetkit.cli import main
    from assetkit.pipeline import load_spec, lock_spec, write_lock
    from assetkit.registry.remote import RemoteConfig

    spec_url = RemoteSpec.parse(s3_bucket.url("team"), endpoint_url=s3_bucket.endpoint_url, region="us-east-1")
    laptop = Registry(tmp_path / "laptop")
    RemoteConfig(laptop.root).add("team", spec_url)
    laptop.add(fine_tunes["ft-a"], name="ft-a")
    spec_file = tmp_path / "pipeline.yaml"
    spec_file.write_text("base: ft-a\n")
    lock_file = write_lock(lock_spec(load_spec(spec_file), laptop), tmp_path / "pipeline.lock")
    push(laptop, remote_for(s3_bucket), ["ft-a"])
    laptop_blobs = sorted(laptop.manifest("ft-a")["blobs"])
    unet_blob = next(iter(laptop.manifest("ft-a.unet")["own_blobs"]))
    laptop.close()
    shutil.rmtree(laptop.root)  # the lock's paths are the laptop's: none of them exists on the runner

    runner_root = tmp_path / "ci-runner"
    RemoteConfig(runner_root).add("team", spec_url)
    monkeypatch.setenv("ASSETKIT_HOME", str(runner_root))
    result = CliRunner().invoke(main, ["check", str(lock_file), "--no-smoke", "--json"])
    doc = json.loads(result.stdout)
    assert result.exit_code == 0, doc
    assert doc["suites"]["lock"]["ok"] and doc["suites"]["validate"]["ok"]
    runner = Registry(runner_root)
    assert [a["name"] for a in runner.ls()] == ["ft-a"]
    assert sorted(runner.store.iter_blobs()) == laptop_blobs

    # registry pull --lock on another empty registry fetches exactly the pinned assets.
    other = tmp_path / "other-runner"
    RemoteConfig(other).add("team", spec_url)
    pulled = CliRunner().invoke(main, ["registry", "pull", "--lock", str(lock_file), "--root", str(other), "--json"])
    summary = json.loads(pulled.stdout)
    assert pulled.exit_code == 0, summary
    assert [a["name"] for a in summary["assets"]] == ["ft-a"] and summary["objects"] == len(runner.manifest("ft-a")["blobs"])

    # With a tampered object on the remote, the gate fails with one line naming it (exit 1).
    s3_bucket.client.put_object(Bucket=s3_bucket.bucket, Key=remote_for(s3_bucket).key_for(unet_blob), Body=b"x")
    monkeypatch.setenv("ASSETKIT_HOME", str(tmp_path / "third-runner"))
    RemoteConfig(tmp_path / "third-runner").add("team", spec_url)
    failed = CliRunner().invoke(main, ["check", str(lock_file), "--no-smoke"])
    assert failed.exit_code == 1
    assert "does not hash to its address" in failed.stderr and "Traceback" not in failed.output
