"""A blob store on an S3-compatible object store, with the same addresses as the local store.

Layout under ``s3://BUCKET/PREFIX``::

    PREFIX/objects/sha256/ab/cdef...      one object per blob, named by the sha256 of its bytes
    PREFIX/manifests/<asset id>.json      one JSON record per asset (what another machine pulls)

:class:`S3BlobStore` answers the registry's ``BlobStore`` protocol (``has``, ``put_file``,
``put_stream``, ``open``, ``size``, ``verify``, ``iter_blobs``) plus the few things only a remote
needs (manifests, listing with dates, deletion, unfinished multipart uploads).

Integrity rules, all enforced here:

* The content id is the key. An ETag is never read as a content id (a multipart ETag is not a
  hash of the bytes at all).
* A blob is created once: ``HEAD`` first, then a conditional create (``If-None-Match: *`` on
  PutObject and on CompleteMultipartUpload), so two machines pushing at once cannot clobber each
  other; the loser of a race finds the object there and counts it as present.
* Every upload carries its SHA256 checksum (``ChecksumSHA256`` on PutObject, one per part on
  multipart uploads) and the answer is compared with what we sent: the part checksums and the
  COMPOSITE checksum of the completed object (``sha256(part digests)-N``, read back with
  ``ChecksumMode=ENABLED``) and its size.
* Large blobs go up in parallel parts of a size fixed by the blob size, so that an interrupted
  upload can be found again (``ListMultipartUploads``), its parts compared with ours
  (``ListParts``, checksums) and continued; an upload that does not fit is aborted.
* Downloads are hashed on the way: :meth:`S3BlobStore.download` writes through an atomic temp
  file and renames only when the bytes hash to their address; :meth:`S3BlobStore.iter_chunks`
  feeds a local store's own verify-then-rename ``put_stream``.

boto3 is imported when a store is made, never at module level (light core). Credentials come
only from boto3's standard chain (environment, shared config/profiles, instance roles).
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import os
import re
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from ..blobs import check_sha256, hash_file
from .errors import RemoteError, RemoteIntegrityError, RemoteNotFoundError
from .url import RemoteSpec

MiB = 1024 * 1024
#: Blobs at least this big go up as multipart uploads.
MULTIPART_THRESHOLD = 64 * MiB
#: Smallest part S3 accepts (all parts but the last).
MIN_PART_SIZE = 5 * MiB
#: Part size for uploads and ranged downloads (raised for very large blobs to stay under 10,000 parts).
DEFAULT_PART_SIZE = 32 * MiB
MAX_PARTS = 10_000
DEFAULT_WORKERS = 8
_READ_CHUNK = 4 * MiB
_HEX64 = re.compile(r"^[0-9a-f]{64}$")  # a key name is tested, not checked (listing skips strays)

#: progress(event, sha256, nbytes). Events: "start" (an upload or download begins, nbytes = blob
#: size), "sent" / "received" (nbytes more over the wire), "resumed" (nbytes found already uploaded in an
#: unfinished multipart upload), "skip" (already present, nbytes = size), "raced" (another writer
#: created it first), "done" (finished, nbytes = size).
Progress = Callable[[str, str, int], None]


def _noop(event: str, sha256: str, nbytes: int) -> None:
    return None


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def part_size_for(size: int, preferred: int = DEFAULT_PART_SIZE) -> int:
    """The part size used for a blob of ``size`` bytes: fixed by the size, so a resume finds the same parts."""
    part = max(preferred, MIN_PART_SIZE)
    while -(-size // part) > MAX_PARTS:
        part *= 2
    return part


@dataclass(frozen=True)
class RemoteBlob:
    """One blob object on the remote as a listing shows it."""

    sha256: str
    size: int
    last_modified: datetime


@dataclass(frozen=True)
class PendingUpload:
    """An unfinished multipart upload (left by an interrupted push)."""

    sha256: str | None
    key: str
    upload_id: str
    initiated: datetime


class _HashingReader(io.RawIOBase):
    """A streaming GET body that raises :class:`RemoteIntegrityError` at EOF when the bytes do not hash to their address."""

    def __init__(self, body: Any, sha256: str, where: str) -> None:
        self._body = body
        self._sha = sha256
        self._where = where
        self._digest = hashlib.sha256()
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        if not data:
            if not self._checked:
                self._checked = True
                if self._digest.hexdigest() != self._sha:
                    raise RemoteIntegrityError(
                        f"remote object does not hash to its address (sha256 {self._digest.hexdigest()})",
                        where=self._where)
            return 0
        self._digest.update(data)
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._body.close()
        finally:
            super().close()


class S3BlobStore:
    """Blobs and manifests under ``s3://bucket/prefix`` (see the module docstring for the rules).

    ``client`` may be given (a boto3 S3 client); otherwise one is made from the standard AWS
    credential chain with ``profile``, ``region`` and ``endpoint_url``. Thread-safe: the worker
    threads share one client, as boto3 allows.
    """

    def __init__(self, spec: RemoteSpec | str, *, client: Any = None, part_size: int = DEFAULT_PART_SIZE,
                 multipart_threshold: int = MULTIPART_THRESHOLD, max_workers: int = DEFAULT_WORKERS,
                 progress: Progress | None = None) -> None:
        self.spec = RemoteSpec.parse(spec) if isinstance(spec, str) else spec
        self.bucket = self.spec.bucket
        self.prefix = self.spec.prefix
        self.part_size = max(int(part_size), MIN_PART_SIZE)
        self.multipart_threshold = max(int(multipart_threshold), MIN_PART_SIZE)
        self.max_workers = max(1, int(max_workers))
        self.progress: Progress = progress or _noop
        self._client = client if client is not None else self._make_client()

    # -- connection -------------------------------------------------------------------------

    def _make_client(self) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:  # pragma: no cover - boto3 is a dependency
            raise RemoteError(f"remotes need boto3 ({exc})") from None
        try:
            session = boto3.Session(profile_name=self.spec.profile) if self.spec.profile else boto3.Session()
        except Exception as exc:  # botocore.exceptions.ProfileNotFound and friends
            raise RemoteError(f"cannot use AWS profile {self.spec.profile!r}: {exc}") from None
        config = Config(max_pool_connections=self.max_workers * 2 + 2,
                        retries={"max_attempts": 5, "mode": "standard"})
        return session.client("s3", endpoint_url=self.spec.endpoint_url, region_name=self.spec.region,
                              config=config)

    @property
    def client(self) -> Any:
        return self._client

    @property
    def url(self) -> str:
        return self.spec.url

    def _error(self, action: str, exc: Exception, key: str | None = None) -> RemoteError:
        code, message = _error_code(exc), str(exc)
        if code in ("NoSuchBucket",):
            return RemoteError(f"bucket {self.bucket!r} does not exist", where=self.url)
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"):
            return RemoteError(f"cannot {action}: access denied ({code})", where=self._where(key))
        if type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
            return RemoteError(f"cannot {action}: no AWS credentials found (environment, profile or role)",
                               where=self.url)
        if type(exc).__name__ in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError"):
            return RemoteError(f"cannot {action}: cannot reach the object store ({message})", where=self.url)
        return RemoteError(f"cannot {action}: {message}", where=self._where(key))

    def _where(self, key: str | None) -> str:
        return f"s3://{self.bucket}/{key}" if key else self.url

    # -- keys -------------------------------------------------------------------------------

    def _join(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def key_for(self, sha256: str) -> str:
        """``PREFIX/objects/sha256/ab/cdef...``, the local store's address under the prefix."""
        sha256 = check_sha256(sha256)
        return self._join("objects", "sha256", sha256[:2], sha256[2:])

    def _objects_prefix(self) -> str:
        return self._join("objects", "sha256") + "/"

    def _sha_from_key(self, key: str) -> str | None:
        rest = key[len(self._objects_prefix()):]
        head, _, tail = rest.partition("/")
        sha = head + tail
        return sha if len(head) == 2 and "/" not in tail and _HEX64.match(sha) else None

    def manifest_key(self, asset_id: str) -> str:
        if not asset_id or "/" in asset_id or asset_id in (".", "..") or not asset_id.isprintable():
            raise RemoteError(f"not a usable manifest id: {asset_id!r}")
        return self._join("manifests", f"{asset_id}.json")

    # -- BlobStore protocol -----------------------------------------------------------------

    def _head(self, key: str, checksums: bool = False) -> dict[str, Any] | None:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if checksums:
            kwargs["ChecksumMode"] = "ENABLED"
        try:
            return self._client.head_object(**kwargs)
        except Exception as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._error("check the remote", exc, key) from None

    def has(self, sha256: str) -> bool:
        """Whether the remote holds an object at this blob's address (one HEAD)."""
        return self._head(self.key_for(sha256)) is not None

    def size(self, sha256: str) -> int:
        head = self._head(self.key_for(sha256))
        if head is None:
            raise RemoteNotFoundError(f"blob {sha256} is not on the remote", where=self.url)
        return int(head["ContentLength"])

    def put_file(self, path: str | os.PathLike[str], expected_sha256: str | None = None) -> str:
        """Upload the file unless the remote has it; returns its sha256.

        With ``expected_sha256`` the file is trusted to have that hash for the HEAD check (the
        local store's blobs are named by it) and hashed again while uploading: a file that does
        not match is refused before anything is completed on the remote.
        """
        path = Path(path)
        if expected_sha256 is None:
            expected_sha256 = hash_file(path)
        sha = check_sha256(expected_sha256)
        size = path.stat().st_size
        if self.has(sha):
            self.progress("skip", sha, size)
            return sha
        self.progress("start", sha, size)
        key = self.key_for(sha)
        if size < self.multipart_threshold:
            created = self._put_small(path, sha, key)
        else:
            created = self._put_multipart(path, sha, key, size)
        self.progress("done" if created else "raced", sha, size)
        return sha

    def put_stream(self, chunks: Iterable[bytes], expected_sha256: str | None = None) -> str:
        """Spool the chunks to a temporary file (hashing them) and upload it; returns the sha256."""
        if expected_sha256 is not None and self.has(check_sha256(expected_sha256)):
            self.progress("skip", expected_sha256, self.size(expected_sha256))
            return expected_sha256
        with tempfile.NamedTemporaryFile(prefix="assetkit-remote-", suffix=".tmp") as spool:
            digest = hashlib.sha256()
            for chunk in chunks:
                digest.update(chunk)
                spool.write(chunk)
            spool.flush()
            sha = digest.hexdigest()
            if expected_sha256 is not None and sha != expected_sha256:
                raise RemoteIntegrityError(f"data hashes to {sha}, not {expected_sha256}")
            return self.put_file(spool.name, sha)

    def open(self, sha256: str) -> BinaryIO:
        """A streaming reader of the blob; reading to the end raises if its bytes do not hash to its address."""
        key = self.key_for(sha256)
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except Exception as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                raise RemoteNotFoundError(f"blob {sha256} is not on the remote", where=self.url) from None
            raise self._error("download", exc, key) from None
        return io.BufferedReader(_HashingReader(body, sha256, self._where(key)), buffer_size=_READ_CHUNK)

    def verify(self, sha256: str) -> bool:
        """Download and rehash: True when the remote object exists and hashes to its address."""
        try:
            for _ in self.iter_chunks(sha256, check=True):
                pass
        except (RemoteIntegrityError, RemoteNotFoundError):
            return False
        return True

    def iter_blobs(self) -> Iterator[str]:
        for blob in self.iter_blob_info():
            yield blob.sha256

    # -- listing, deletion ------------------------------------------------------------------

    def _list(self, prefix: str) -> Iterator[dict[str, Any]]:
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                yield from page.get("Contents", [])
        except RemoteError:
            raise
        except Exception as exc:
            raise self._error("list the remote", exc, prefix) from None

    def iter_blob_info(self) -> Iterator[RemoteBlob]:
        """Every blob object under the prefix (keys that are not blob addresses are ignored)."""
        for item in self._list(self._objects_prefix()):
            sha = self._sha_from_key(item["Key"])
            if sha is not None:
                yield RemoteBlob(sha, int(item["Size"]), item["LastModified"])

    def stray_keys(self) -> list[str]:
        """Keys under ``objects/`` that are not blob addresses (reported by verify)."""
        return [item["Key"] for item in self._list(self._objects_prefix())
                if self._sha_from_key(item["Key"]) is None]

    def delete_blob(self, sha256: str) -> None:
        key = self.key_for(sha256)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise self._error("delete", exc, key) from None

    # -- manifests --------------------------------------------------------------------------

    def put_manifest(self, asset_id: str, manifest: dict[str, Any], create_only: bool = False) -> bool:
        """Write an asset's manifest (checksummed like every upload); True when written.

        ``create_only`` makes it a conditional create (``If-None-Match: *``): False when another
        writer created this manifest first (the caller reads and compares it).
        """
        key = self.manifest_key(asset_id)
        body = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
        checksum = _b64(hashlib.sha256(body).digest())
        extra = {"IfNoneMatch": "*"} if create_only else {}
        try:
            answer = self._client.put_object(Bucket=self.bucket, Key=key, Body=body, ChecksumAlgorithm="SHA256",
                                             ChecksumSHA256=checksum, ContentType="application/json", **extra)
        except Exception as exc:
            if create_only and _error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False
            raise self._error("upload a manifest", exc, key) from None
        _check_answer(answer.get("ChecksumSHA256"), checksum, self._where(key))
        return True

    def get_manifest(self, asset_id: str) -> dict[str, Any] | None:
        key = self.manifest_key(asset_id)
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise self._error("download a manifest", exc, key) from None
        return _parse_manifest(body, self._where(key))

    def iter_manifests(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(asset id, manifest) for every manifest on the remote. A manifest that is not JSON raises."""
        prefix = self._join("manifests") + "/"
        for item in self._list(prefix):
            key = item["Key"]
            if not key.endswith(".json"):
                continue
            asset_id = key[len(prefix):-len(".json")]
            if "/" in asset_id:
                continue
            try:
                body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except Exception as exc:
                if _error_code(exc) in ("NoSuchKey", "404"):
                    continue  # removed while we listed
                raise self._error("download a manifest", exc, key) from None
            yield asset_id, _parse_manifest(body, self._where(key))

    def delete_manifest(self, asset_id: str) -> None:
        key = self.manifest_key(asset_id)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise self._error("delete a manifest", exc, key) from None

    # -- uploads ----------------------------------------------------------------------------

    def _put_small(self, path: Path, sha: str, key: str) -> bool:
        """One conditional PutObject with the blob's SHA256; False when another writer created it first."""
        data = path.read_bytes()
        digest = hashlib.sha256(data)
        if digest.hexdigest() != sha:
            raise RemoteIntegrityError(f"file hashes to {digest.hexdigest()}, not {sha}; not uploaded",
                                       where=str(path))
        checksum = _b64(digest.digest())
        try:
            answer = self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ChecksumAlgorithm="SHA256",
                                             ChecksumSHA256=checksum, IfNoneMatch="*")
        except Exception as exc:
            if _error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False
            raise self._error("upload", exc, key) from None
        _check_answer(answer.get("ChecksumSHA256"), checksum, self._where(key))
        self.progress("sent", sha, len(data))
        return True

    def pending_uploads(self, sha256: str | None = None) -> list[PendingUpload]:
        """Unfinished multipart uploads under the prefix (for one blob when ``sha256`` is given)."""
        prefix = self.key_for(sha256) if sha256 else self._objects_prefix()
        found: list[PendingUpload] = []
        try:
            paginator = self._client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for upload in page.get("Uploads", []):
                    key = upload["Key"]
                    if sha256 and key != prefix:
                        continue
                    found.append(PendingUpload(self._sha_from_key(key), key, upload["UploadId"],
                                               upload["Initiated"]))
        except Exception as exc:
            raise self._error("list unfinished uploads", exc, prefix) from None
        return found

    def abort_upload(self, upload: PendingUpload) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=upload.key, UploadId=upload.upload_id)
        except Exception as exc:
            if _error_code(exc) not in ("NoSuchUpload", "404"):
                raise self._error("abort an unfinished upload", exc, upload.key) from None

    def _uploaded_parts(self, key: str, upload_id: str) -> dict[int, dict[str, Any]]:
        parts: dict[int, dict[str, Any]] = {}
        try:
            paginator = self._client.get_paginator("list_parts")
            for page in paginator.paginate(Bucket=self.bucket, Key=key, UploadId=upload_id):
                for part in page.get("Parts", []):
                    parts[int(part["PartNumber"])] = part
        except Exception as exc:
            if _error_code(exc) in ("NoSuchUpload", "404"):
                return {}
            raise self._error("list uploaded parts", exc, key) from None
        return parts

    def _put_multipart(self, path: Path, sha: str, key: str, size: int) -> bool:
        """Parallel multipart upload, continuing an unfinished one for this blob when its parts fit ours.

        Every part is read and hashed; a part the unfinished upload already holds (same number
        and size, and the same SHA256 where the store lists one) is not sent again. The blob's
        own sha256 is computed in order on the side, so a file that is not what its name says
        never completes.
        """
        part_size = part_size_for(size, self.part_size)
        count = -(-size // part_size)
        ranges = [(n + 1, n * part_size, min(part_size, size - n * part_size)) for n in range(count)]
        upload_id, held = self._resume_or_create(key, sha, ranges)
        receipts: dict[int, tuple[str, str]] = {}  # part number -> (checksum, ETag receipt)
        whole = hashlib.sha256()
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            with ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="assetkit-put") as pool:
                futures = [pool.submit(self._send_part, fd, key, upload_id, sha, number, offset, length,
                                       held.get(number)) for number, offset, length in ranges]
                try:
                    for _, offset, length in ranges:  # hash in order while the parts go up
                        whole.update(_pread_all(fd, length, offset))
                    for future in futures:
                        number, checksum, etag = future.result()
                        receipts[number] = (checksum, etag)
                except RemoteError:
                    for future in futures:
                        future.cancel()
                    if self._head(key) is not None:
                        return False  # another writer completed this blob under us (its upload ended)
                    raise
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
        finally:
            os.close(fd)
        if whole.hexdigest() != sha:
            self.abort_upload(PendingUpload(sha, key, upload_id, datetime.now()))
            raise RemoteIntegrityError(f"file hashes to {whole.hexdigest()}, not {sha}; upload aborted",
                                       where=str(path))
        return self._complete(key, sha, upload_id, receipts, size)

    def _resume_or_create(self, key: str, sha: str,
                          ranges: list[tuple[int, int, int]]) -> tuple[str, dict[int, dict[str, Any]]]:
        """An unfinished upload of this key whose parts have our part sizes, or a new upload.

        Returns the upload id and the parts it already holds (number -> ListParts entry).
        """
        sizes = {number: length for number, _, length in ranges}
        for pending in sorted(self.pending_uploads(sha), key=lambda u: u.initiated, reverse=True):
            parts = self._uploaded_parts(key, pending.upload_id)
            if all(sizes.get(n) == int(p.get("Size", -1)) for n, p in parts.items()):
                return pending.upload_id, parts
            self.abort_upload(pending)  # cut into other parts (another part size): start again
        try:
            answer = self._client.create_multipart_upload(Bucket=self.bucket, Key=key, ChecksumAlgorithm="SHA256")
        except Exception as exc:
            raise self._error("start a multipart upload", exc, key) from None
        return answer["UploadId"], {}

    def _send_part(self, fd: int, key: str, upload_id: str, sha: str, number: int, offset: int, length: int,
                   held: dict[str, Any] | None) -> tuple[int, str, str]:
        data = _pread_all(fd, length, offset)
        checksum = _b64(hashlib.sha256(data).digest())
        if held is not None and held.get("ChecksumSHA256", checksum) == checksum:
            self.progress("resumed", sha, length)
            return number, checksum, held["ETag"]
        try:
            answer = self._client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                              Body=data, ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum)
        except Exception as exc:
            raise self._error(f"upload part {number}", exc, key) from None
        _check_answer(answer.get("ChecksumSHA256"), checksum, self._where(key), f"part {number}")
        self.progress("sent", sha, length)
        return number, checksum, answer["ETag"]

    def _complete(self, key: str, sha: str, upload_id: str, receipts: dict[int, tuple[str, str]],
                  size: int) -> bool:
        """CompleteMultipartUpload (``If-None-Match: *``), then check size and COMPOSITE checksum.

        Each part's ETag is sent back because S3 requires it: an opaque receipt, never a content id.
        Returns False when another writer created the blob first.
        """
        numbers = sorted(receipts)
        parts = [{"PartNumber": n, "ChecksumSHA256": receipts[n][0], "ETag": receipts[n][1]} for n in numbers]
        try:
            answer = self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, IfNoneMatch="*")
        except Exception as exc:
            if _error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409",
                                    "NoSuchUpload") and self._head(key) is not None:
                self.abort_upload(PendingUpload(sha, key, upload_id, datetime.now()))
                return False  # another writer completed this blob first
            raise self._error("complete a multipart upload", exc, key) from None
        digests = b"".join(base64.b64decode(receipts[n][0]) for n in numbers)
        composite = f"{_b64(hashlib.sha256(digests).digest())}-{len(numbers)}"
        head = self._head(key, checksums=True) or {}
        claimed = answer.get("ChecksumSHA256") or head.get("ChecksumSHA256")
        if claimed and "-" not in claimed:
            claimed = f"{claimed}-{len(numbers)}"
        if int(head.get("ContentLength", -1)) != size or claimed != composite:
            # What completed is not what we sent: never leave a wrong object at a content address.
            self.delete_blob(sha)
            raise RemoteIntegrityError(
                f"completed object does not match what was sent (size {head.get('ContentLength')} of {size}, "
                f"checksum {claimed!r}, expected {composite!r}); removed", where=self._where(key))
        return True

    # -- downloads --------------------------------------------------------------------------

    def iter_chunks(self, sha256: str, check: bool = True) -> Iterator[bytes]:
        """The blob's bytes in order, fetched as parallel ranged GETs (bounded look-ahead).

        With ``check`` the bytes are hashed on the way and a blob that does not hash to its
        address raises :class:`RemoteIntegrityError` after its last chunk, so a consumer that
        writes through a temporary file (a local store's ``put_stream``) never renames it in.
        """
        key = self.key_for(sha256)
        size = self.size(sha256)
        self.progress("start", sha256, size)
        part = part_size_for(size, self.part_size)
        ranges = [(offset, min(part, size - offset)) for offset in range(0, size, part)] or [(0, 0)]
        digest = hashlib.sha256()
        todo = iter(ranges)
        with ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="assetkit-get") as pool:
            in_flight: deque[Future[bytes]] = deque(
                pool.submit(self._get_range, key, offset, length)
                for offset, length in itertools.islice(todo, self.max_workers * 2))
            try:
                while in_flight:
                    data = in_flight.popleft().result()
                    for offset, length in itertools.islice(todo, 1):
                        in_flight.append(pool.submit(self._get_range, key, offset, length))
                    digest.update(data)
                    self.progress("received", sha256, len(data))
                    yield data
            finally:
                for future in in_flight:
                    future.cancel()
        if check and digest.hexdigest() != sha256:
            raise RemoteIntegrityError(
                f"remote object does not hash to its address (its bytes hash to {digest.hexdigest()}); refused",
                where=self._where(key))
        self.progress("done", sha256, size)

    def _get_range(self, key: str, offset: int, length: int) -> bytes:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if length:
            kwargs["Range"] = f"bytes={offset}-{offset + length - 1}"
        try:
            data = self._client.get_object(**kwargs)["Body"].read()
        except Exception as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                raise RemoteNotFoundError("blob vanished from the remote", where=self._where(key)) from None
            raise self._error("download", exc, key) from None
        if len(data) != length:
            raise RemoteIntegrityError(f"got {len(data)} bytes at offset {offset}, expected {length}",
                                       where=self._where(key))
        return data

    def download(self, sha256: str, dest: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write the blob to ``dest`` through a temporary file, renamed only when the bytes hash to the address."""
        from ...formats.atomic import atomic_write

        dest = Path(dest)
        with atomic_write(dest, overwrite=overwrite) as out:
            for chunk in self.iter_chunks(sha256, check=True):
                out.write(chunk)
        return dest


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    chunks: list[bytes] = []
    remaining = length
    while remaining:
        data = os.pread(fd, remaining, offset + length - remaining)
        if not data:
            raise RemoteError("file shrank while uploading")
        chunks.append(data)
        remaining -= len(data)
    return b"".join(chunks)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _check_answer(answered: str | None, sent: str, where: str, what: str = "checksum") -> None:
    """The store's ChecksumSHA256 must be the one we sent (a store that answers none is refused)."""
    if answered != sent:
        raise RemoteIntegrityError(f"object store answered {what} {answered!r}, we sent {sent!r}", where=where)


def _parse_manifest(body: bytes, where: str) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RemoteIntegrityError(f"manifest is not JSON ({exc})", where=where) from None
    if not isinstance(document, dict):
        raise RemoteIntegrityError("manifest is not a JSON object", where=where)
    return document
