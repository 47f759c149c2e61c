"""Which data version a data location holds now: the key `--on-new-data` fires on once.

A location is read through an `ObjectStore`: it lists objects (key, size, mtime, etag) and reads
one object's bytes. `LocalStore` serves a local folder or file, `S3Store` an `s3://bucket/prefix`
(one ListObjectsV2 listing per check: Key, Size, LastModified and ETag; GetObject for the
manifest), on the credentials and endpoint every other S3 access of recur uses.

Two kinds of location, from the config:

* `data.source` set (the job imports it): the SOURCE files. Their version is the sha256 of the
  sorted (key, size, etag) listing; a local file's etag is the sha256 of its content (cached by
  size and mtime), so touching a file without changing it does not fire. Write sources
  atomically (write + rename, as an S3 upload is) so a half-written file is never seen.
* no `data.source`: the canonical dataset at `data.root`. Its version is the manifest's
  `data_hash`. Importers write `manifest.json` last and remove it first, so a dataset that is
  being (re)imported has no version and never fires half-way.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Protocol

from pydantic import ValidationError

from pipeline.config import RecurConfig
from pipeline.data.dataset import MANIFEST_FILE, DatasetError, Manifest


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the store's root ("" for a store that is a single file)
    size: int
    mtime: float  # seconds since the epoch
    etag: str | None = None  # content hash when the store has one (S3 ETag); None: not known


class ObjectStore(Protocol):
    url: str

    def list(self) -> list[ObjectInfo]: ...

    def read_bytes(self, key: str) -> bytes: ...


class LocalStore:
    """A local folder (listed recursively, hidden names skipped) or a single file."""

    _sha_cache: dict[str, tuple[int, int, str]] = {}  # path -> (size, mtime_ns, sha256)

    def __init__(self, path: str) -> None:
        path = os.fspath(path)
        if path.startswith("file://"):
            path = path[len("file://"):]
        elif "://" in path:
            raise ValueError(f"{path!r}: a local path, file:// or s3:// location was expected")
        self.root = os.path.abspath(os.path.expanduser(path))
        self.url = self.root

    def _path(self, key: str) -> str:
        return os.path.join(self.root, key) if key else self.root

    def list(self) -> list[ObjectInfo]:
        if os.path.isfile(self.root):
            return [self._info("")]
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue  # temporary files of atomic writers, editor files
                key = os.path.relpath(os.path.join(dirpath, name), self.root)
                try:
                    out.append(self._info(key))
                except FileNotFoundError:
                    continue  # removed while listing
        return out

    def _info(self, key: str) -> ObjectInfo:
        path = self._path(key)
        st = os.stat(path)
        cached = self._sha_cache.get(path)
        if cached is not None and cached[:2] == (st.st_size, st.st_mtime_ns):
            etag = cached[2]
        else:  # hashed again only when size or mtime changed
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            etag = h.hexdigest()
            self._sha_cache[path] = (st.st_size, st.st_mtime_ns, etag)
        return ObjectInfo(key=key, size=st.st_size, mtime=st.st_mtime, etag=etag)

    def read_bytes(self, key: str) -> bytes:
        with open(self._path(key), "rb") as fh:
            return fh.read()


def _hidden(key: str) -> bool:
    return any(part.startswith(".") for part in key.split("/"))


class S3Store:
    """The objects under `s3://bucket/prefix` (a "folder"), or the one object at that key.

    One paginated ListObjectsV2 per `list()`: no object is downloaded or HEADed to tell versions
    apart, the ETag is the content fingerprint. An S3 PUT replaces an object whole, so a reader
    never sees half an object; importers still write `manifest.json` last.
    """

    def __init__(self, uri: str) -> None:
        from pipeline import storage

        self.bucket, self.key = storage.split_s3(uri)
        self.key = self.key.rstrip("/")
        self.url = f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"

    def _call(self, operation: str, fn, **kwargs):
        from pipeline import storage

        try:
            return fn(**kwargs)
        except Exception as exc:
            if storage.is_not_found(exc):
                raise FileNotFoundError(f"no object {self.url}/{kwargs.get('Key', '')}") from None
            raise storage.describe_error(exc, self.url, operation) from exc

    def list(self) -> list[ObjectInfo]:
        from pipeline import storage

        client = storage.s3_client()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.key)
        items = [item for page in self._call("list", lambda: list(pages))
                 for item in page.get("Contents", [])]
        exact = [item for item in items if item["Key"] == self.key]
        if exact and self.key:  # a single object, as a source file
            return [self._info("", exact[0])]
        folder = self.key + "/" if self.key else ""
        out = []
        for item in items:
            key = item["Key"]
            if not key.startswith(folder) or key.endswith("/") or _hidden(key[len(folder):]):
                continue  # a sibling sharing the name's start ("data" vs "data-old/"), a folder marker
            out.append(self._info(key[len(folder):], item))
        return sorted(out, key=lambda o: o.key)

    @staticmethod
    def _info(key: str, item: dict) -> ObjectInfo:
        return ObjectInfo(key=key, size=int(item["Size"]), mtime=item["LastModified"].timestamp(),
                          etag=str(item["ETag"]).strip('"'))

    def read_bytes(self, key: str) -> bytes:
        from pipeline import storage

        full = f"{self.key}/{key}".strip("/") if key else self.key
        body = self._call("read", storage.s3_client().get_object, Bucket=self.bucket, Key=full)["Body"]
        return body.read()


def store_for(location: str) -> LocalStore | S3Store:
    """The store of a data location: `s3://bucket/prefix`, else a local path."""
    from pipeline import storage

    return S3Store(location) if storage.is_s3(location) else LocalStore(location)


@dataclass(frozen=True)
class DataVersion:
    key: str  # 64 hex characters: the idempotency key
    kind: str  # "dataset" (manifest data_hash) or "sources" (listing fingerprint)
    location: str

    @property
    def short(self) -> str:
        return self.key[:12]


class DatasetWatcher:
    """The canonical dataset at a folder: its manifest's data_hash."""

    kind = "dataset"

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    @property
    def location(self) -> str:
        return self.store.url

    def current(self) -> DataVersion | None:
        try:
            text = self.store.read_bytes(MANIFEST_FILE)
        except (FileNotFoundError, NotADirectoryError):
            return None  # nothing imported yet, or an import in progress
        try:
            manifest = Manifest.model_validate_json(text)
        except ValidationError as exc:
            raise DatasetError(f"invalid manifest in {self.location}: {exc}") from None
        return DataVersion(key=manifest.data_hash, kind=self.kind, location=self.location)


class SourcesWatcher:
    """Source files or folders: a fingerprint of their listings."""

    kind = "sources"

    def __init__(self, stores: list[ObjectStore]) -> None:
        self.stores = stores

    @property
    def location(self) -> str:
        return ", ".join(s.url for s in self.stores)

    def current(self) -> DataVersion | None:
        listing = []
        for store in self.stores:
            try:
                objects = store.list()
            except FileNotFoundError:
                return None  # a source is missing (being replaced): no version now
            if not objects:
                return None
            listing.append([store.url, [[o.key, o.size, o.etag or f"mtime:{o.mtime}"] for o in
                                        sorted(objects, key=lambda o: o.key)]])
        digest = hashlib.sha256(json.dumps(listing, separators=(",", ":")).encode()).hexdigest()
        return DataVersion(key=digest, kind=self.kind, location=self.location)


def watcher_for(cfg: RecurConfig) -> DatasetWatcher | SourcesWatcher:
    """What `--on-new-data` watches for this config: its source files, else its dataset folder."""
    if cfg.data.source is not None:
        from pipeline.data.importers import resolve_source

        # an S3 source is listed where it is, never downloaded to tell its version
        return SourcesWatcher([store_for(p if p.startswith("s3://") else resolve_source(p))
                               for p in cfg.data.source.paths])
    return DatasetWatcher(store_for(cfg.data.root))
