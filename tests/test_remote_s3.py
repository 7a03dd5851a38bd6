"""The S3 blob store against a real S3 API server on 127.0.0.1 (moto's server mode)."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import _s3_helpers
import pytest
from _s3_helpers import S3Bucket

from assetkit.registry.remote import (
    RemoteConfig,
    RemoteError,
    RemoteIntegrityError,
    RemoteSpec,
    S3BlobStore,
    part_size_for,
)
from assetkit.registry.remote.s3 import MIN_PART_SIZE

MiB = 1024 * 1024
s3_server, s3_bucket = _s3_helpers.s3_server, _s3_helpers.s3_bucket  # the loopback S3 fixtures


class Counter:
    """A progress callback that counts what went over the wire."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()

    def __call__(self, event: str, sha: str, nbytes: int) -> None:
        with self.lock:
            self.events.append((event, sha, nbytes))

    def total(self, event: str) -> int:
        return sum(n for e, _, n in self.events if e == event)

    def count(self, event: str) -> int:
        return sum(1 for e, _, _ in self.events if e == event)


def store_for(bucket: S3Bucket, progress: Counter | None = None, **kwargs: object) -> S3BlobStore:
    spec = RemoteSpec.parse(bucket.url("team"), endpoint_url=bucket.endpoint_url, region="us-east-1")
    kwargs.setdefault("multipart_threshold", MIN_PART_SIZE)
    kwargs.setdefault("part_size", MIN_PART_SIZE)
    return S3BlobStore(spec, progress=progress, **kwargs)


def write(path: Path, data: bytes) -> tuple[Path, str]:
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def raw_get(bucket: S3Bucket, key: str) -> bytes:
    return bucket.client.get_object(Bucket=bucket.bucket, Key=key)["Body"].read()


def test_small_blob_round_trip_at_the_local_address(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    progress = Counter()
    store = store_for(s3_bucket, progress)
    path, sha = write(tmp_path / "blob", b"a tiny blob" * 100)
    assert not store.has(sha)
    assert store.put_file(path) == sha
    key = f"team/objects/sha256/{sha[:2]}/{sha[2:]}"
    assert store.key_for(sha) == key
    assert raw_get(s3_bucket, key) == path.read_bytes()  # read back with plain boto3
    head = s3_bucket.client.head_object(Bucket=s3_bucket.bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == store_sha_b64(sha)  # the checksum went with the upload
    assert store.has(sha) and store.size(sha) == 1100
    assert list(store.iter_blobs()) == [sha]
    assert store.open(sha).read() == path.read_bytes()
    assert store.verify(sha)
    assert progress.total("sent") == 1100
    # Second put: HEAD says present, nothing is sent.
    assert store.put_file(path, sha) == sha
    assert progress.total("sent") == 1100 and progress.count("skip") == 1


def store_sha_b64(sha: str) -> str:
    import base64

    return base64.b64encode(bytes.fromhex(sha)).decode()


def test_multipart_blob_round_trip_with_composite_checksum(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    progress = Counter()
    store = store_for(s3_bucket, progress, max_workers=3)
    data = os.urandom(2 * MIN_PART_SIZE + 12345)
    path, sha = write(tmp_path / "big", data)
    assert store.put_file(path, sha) == sha
    head = s3_bucket.client.head_object(Bucket=s3_bucket.bucket, Key=store.key_for(sha), ChecksumMode="ENABLED")
    assert head["ContentLength"] == len(data)
    assert head["ChecksumSHA256"].split("-")[0]  # COMPOSITE: a checksum of the part checksums
    assert head["ETag"].strip('"').endswith("-3")  # a multipart ETag is no content hash: we never use it
    assert raw_get(s3_bucket, store.key_for(sha)) == data
    out = store.download(sha, tmp_path / "out")
    assert out.read_bytes() == data
    assert progress.total("sent") == len(data) and progress.total("received") == len(data)


def test_put_stream_and_wrong_expected_hash(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    store = store_for(s3_bucket)
    data = b"streamed " * 1000
    sha = hashlib.sha256(data).hexdigest()
    assert store.put_stream([data[:10], data[10:]], sha) == sha
    with pytest.raises(RemoteIntegrityError):
        store.put_stream([b"other bytes"], sha.replace(sha[0], "0" if sha[0] != "0" else "1", 1))
    path, real = write(tmp_path / "liar", b"these bytes are not what the name says")
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(RemoteIntegrityError):
        store.put_file(path, wrong)
    assert not store.has(wrong) and sorted(store.iter_blobs()) == [sha]


def test_conditional_create_never_clobbers(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    """Skip the HEAD (as a machine that lost the race would): the existing object must survive."""
    store = store_for(s3_bucket)
    for name, size in (("small", 1000), ("multipart", MIN_PART_SIZE + 10)):
        path, sha = write(tmp_path / name, os.urandom(size))
        key = store.key_for(sha)
        s3_bucket.client.put_object(Bucket=s3_bucket.bucket, Key=key, Body=b"first writer")
        if size < store.multipart_threshold:
            created = store._put_small(path, sha, key)
        else:
            created = store._put_multipart(path, sha, key, size)
        assert created is False
        assert raw_get(s3_bucket, key) == b"first writer"
        assert store.pending_uploads(sha) == []  # the losing multipart upload was aborted


@pytest.mark.parametrize("size", [4000, MIN_PART_SIZE + 4000], ids=["single", "multipart"])
def test_two_concurrent_pushes_of_one_blob(s3_bucket: S3Bucket, tmp_path: Path, size: int) -> None:
    """Both see 'missing' on HEAD, then both upload: one creates, the other finds it created."""
    data = os.urandom(size)
    path, sha = write(tmp_path / "blob", data)
    barrier = threading.Barrier(2, timeout=30)

    def wait_for_the_other(event: str, _sha: str, _n: int) -> None:
        if event == "start":
            barrier.wait()  # both HEADs have answered 'missing' before either upload starts

    stores = [store_for(s3_bucket, wait_for_the_other, max_workers=2) for _ in range(2)]
    results: list[object] = []
    threads = [threading.Thread(target=lambda s=s: results.append(_try(s.put_file, path, sha))) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [sha, sha]
    assert raw_get(s3_bucket, stores[0].key_for(sha)) == data
    assert stores[0].pending_uploads() == []
    assert store_for(s3_bucket).verify(sha)


def _try(func, *args):  # type: ignore[no-untyped-def]
    try:
        return func(*args)
    except Exception as exc:  # noqa: BLE001 - reported to the test thread
        return exc


class Interrupt(Exception):
    pass


def test_interrupted_multipart_upload_is_resumed(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    data = os.urandom(4 * MIN_PART_SIZE + 777)
    path, sha = write(tmp_path / "big", data)
    sent: list[int] = []

    def stop_after_two_parts(event: str, _sha: str, nbytes: int) -> None:
        if event == "sent":
            sent.append(nbytes)
            if len(sent) == 2:
                raise Interrupt("network went away")

    with pytest.raises(Interrupt):
        store_for(s3_bucket, stop_after_two_parts, max_workers=1).put_file(path, sha)
    first = store_for(s3_bucket)
    assert not first.has(sha)
    (pending,) = first.pending_uploads(sha)
    assert pending.sha256 == sha
    already = s3_bucket.client.list_parts(Bucket=s3_bucket.bucket, Key=pending.key, UploadId=pending.upload_id)
    held = sum(part["Size"] for part in already["Parts"])
    assert 0 < held < len(data)
    progress = Counter()
    resumed = store_for(s3_bucket, progress, max_workers=2)
    assert resumed.put_file(path, sha) == sha
    assert progress.total("resumed") == held  # what was there was skipped
    assert progress.total("sent") == len(data) - held
    assert resumed.pending_uploads() == []
    assert raw_get(s3_bucket, resumed.key_for(sha)) == data


def test_unfinished_upload_with_other_parts_is_aborted(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    data = os.urandom(3 * MIN_PART_SIZE)
    path, sha = write(tmp_path / "big", data)
    store = store_for(s3_bucket)
    key = store.key_for(sha)
    upload = s3_bucket.client.create_multipart_upload(Bucket=s3_bucket.bucket, Key=key)
    s3_bucket.client.upload_part(Bucket=s3_bucket.bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1,
                                 Body=data[: MIN_PART_SIZE + 1])  # cut elsewhere: not ours
    progress = Counter()
    store = store_for(s3_bucket, progress)
    assert store.put_file(path, sha) == sha
    assert progress.total("resumed") == 0 and progress.total("sent") == len(data)
    assert store.pending_uploads() == []
    assert raw_get(s3_bucket, key) == data


def test_tampered_object_is_refused_and_never_written(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    store = store_for(s3_bucket)
    path, sha = write(tmp_path / "blob", b"the real bytes" * 50)
    store.put_file(path, sha)
    s3_bucket.client.put_object(Bucket=s3_bucket.bucket, Key=store.key_for(sha), Body=b"the evil bytes" * 50)
    assert store.has(sha) and not store.verify(sha)
    with pytest.raises(RemoteIntegrityError, match="does not hash to its address"):
        store.download(sha, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob"]  # no file, no temporary left
    with pytest.raises(RemoteIntegrityError):
        store.open(sha).read()


def test_manifests_round_trip(s3_bucket: S3Bucket) -> None:
    store = store_for(s3_bucket)
    manifest = {"name": "my-vae", "kind": "vae", "blobs": ["ab" * 32]}
    assert store.put_manifest("asset-1", manifest, create_only=True)
    assert store.manifest_key("asset-1") == "team/manifests/asset-1.json"
    assert not store.put_manifest("asset-1", {"name": "other"}, create_only=True)  # never clobbered
    assert store.get_manifest("asset-1") == manifest
    assert store.get_manifest("nope") is None
    assert dict(store.iter_manifests()) == {"asset-1": manifest}
    s3_bucket.client.put_object(Bucket=s3_bucket.bucket, Key="team/manifests/bad.json", Body=b"{not json")
    with pytest.raises(RemoteIntegrityError, match="not JSON"):
        dict(store.iter_manifests())
    with pytest.raises(RemoteError):
        store.manifest_key("../escape")


def test_missing_bucket_and_unreachable_endpoint_are_one_line_errors(s3_bucket: S3Bucket) -> None:
    gone = S3BlobStore(RemoteSpec.parse("s3://no-such-bucket-here/x", endpoint_url=s3_bucket.endpoint_url))
    with pytest.raises(RemoteError, match="does not exist"):
        list(gone.iter_blobs())
    from _s3_helpers import _free_port

    closed = S3BlobStore(RemoteSpec.parse("s3://bucket/x", endpoint_url=f"http://127.0.0.1:{_free_port()}"),
                         max_workers=1)
    closed.client.meta.config.retries = {"max_attempts": 0}
    with pytest.raises(RemoteError, match="cannot"):
        closed.has("ab" * 32)


@pytest.mark.parametrize("url", ["http://bucket/x", "s3://", "s3://UPPER/x", "s3://key:secret@bucket/x",
                                 "s3://bucket/../x", "s3://bucket/x?versionId=1"])
def test_bad_remote_urls(url: str) -> None:
    with pytest.raises(RemoteError):
        RemoteSpec.parse(url)


def test_remote_spec_and_part_sizes() -> None:
    spec = RemoteSpec.parse("s3://team-models/sd/shared/", endpoint_url="http://127.0.0.1:9000", profile="ci")
    assert (spec.bucket, spec.prefix, spec.url) == ("team-models", "sd/shared", "s3://team-models/sd/shared")
    assert RemoteSpec.from_dict(spec.to_dict()) == spec
    assert part_size_for(10 * MiB) == 32 * MiB
    assert -(-(1024 * 1024 * MiB) // part_size_for(1024 * 1024 * MiB)) <= 10_000  # 1 TiB fits in 10,000 parts


def test_remote_config(tmp_path: Path) -> None:
    config = RemoteConfig(tmp_path)
    with pytest.raises(RemoteError, match="no remote configured"):
        config.get()
    config.add("team", RemoteSpec.parse("s3://bucket-a/p"))
    config.add("backup", RemoteSpec.parse("s3://bucket-b", region="eu-west-1"))
    assert config.default == "team" and list(config.remotes()) == ["backup", "team"]
    assert config.get("backup")[1].region == "eu-west-1"
    with pytest.raises(RemoteError, match="exists"):
        config.add("team", RemoteSpec.parse("s3://bucket-c"))
    with pytest.raises(RemoteError, match="not a usable remote name"):
        config.add("../x", RemoteSpec.parse("s3://bucket-c"))
    assert "secret" not in (tmp_path / "remotes.json").read_text().lower()
    config.remove("team")
    assert config.get() == ("backup", RemoteSpec.parse("s3://bucket-b", region="eu-west-1"))
    with pytest.raises(RemoteError, match="no remote named"):
        config.get("team")


def test_light_core_remote_modules_import_neither_boto3_nor_torch() -> None:
    import subprocess
    import sys

    code = ("import sys; import assetkit.cli.remote_cmd, assetkit.registry.remote.transfer, assetkit.cli.registry_cmd; "
            "print(sorted(m for m in ('boto3', 'botocore', 'torch', 'diffusers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
