"""Folders: the files under one root (a local folder or `s3://bucket/prefix`), named relative to
it, with the same operations on both. The one place that reads and writes a dataset's files
(`pipeline.data.dataset`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

from pipeline.storage.paths import StorageError, describe_error, filesystem_for, is_s3, join, local_path

if TYPE_CHECKING:
    import pyarrow as pa


# How recur writes its Parquet: zstd (compact, fast to decode), one row group (a deterministic
# layout), and a CRC32 checksum per page, which every read verifies (`page_checksum_verification`):
# flipped bytes in a stored dataset fail the read instead of training on changed values.
PARQUET_WRITE: dict[str, Any] = {"compression": "zstd", "write_page_checksum": True}
PART_GLOB = "part-*.parquet"


class _Folder:
    """What both kinds of folder share. `error` is the exception type every failure is raised
    as (the caller's: DatasetError for a dataset folder), with the message of the cause."""

    root: str
    error: type[Exception]

    def path(self, *parts: str) -> str:
        return join(self.root, *parts)

    def parts(self, folder: str) -> list[str]:
        raise NotImplementedError

    def _delete(self, rel: str) -> None:
        raise NotImplementedError

    def remove_parts(self, folder: str) -> None:
        for rel in self.parts(folder):
            self._delete(rel)


class LocalFolder(_Folder):
    """A local folder."""

    def __init__(self, root: str, error: type[Exception] = StorageError) -> None:
        root = os.fspath(root)
        self.error = error
        if "://" in root and not root.startswith("file://"):
            raise error(f"dataset root {root!r}: expected a local folder, file:// or s3://bucket/prefix")
        self.root = local_path(root)

    def exists(self, *parts: str) -> bool:
        return os.path.exists(self.path(*parts))

    def makedirs(self, *parts: str) -> None:
        os.makedirs(self.path(*parts), exist_ok=True)

    def parts(self, folder: str) -> list[str]:
        """Part files of ``folder`` relative to the root, in name order."""
        import glob

        found = sorted(glob.glob(self.path(folder, PART_GLOB)))
        return [os.path.relpath(p, self.root).replace(os.sep, "/") for p in found]

    def _delete(self, rel: str) -> None:
        os.remove(self.path(rel))

    def remove(self, *parts: str) -> None:
        p = self.path(*parts)
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.remove(p)

    def write_parquet(self, table: pa.Table, rel: str) -> None:
        import pyarrow.parquet as pq

        # zstd: compact and fast to decode; one row group keeps the file layout deterministic.
        pq.write_table(table, self.path(rel), row_group_size=max(1, len(table)), **PARQUET_WRITE)

    def read_parquet(self, rel: str) -> pa.Table:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.read_table(self.path(rel), page_checksum_verification=True)
        except (pa.ArrowException, OSError) as exc:
            raise self.error(f"{self.path(rel)}: not a readable Parquet file, truncated or corrupt "
                             f"({exc}); import the dataset again") from None

    def write_text_atomic(self, rel: str, text: str) -> None:
        target = self.path(rel)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(target))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def read_text(self, rel: str) -> str:
        with open(self.path(rel), encoding="utf-8") as fh:
            return fh.read()


class S3Folder(_Folder):
    """The same operations on `s3://bucket/prefix`, through pyarrow's S3 filesystem.

    A PUT replaces an object whole, so every write is atomic; manifest.json is still written
    last, after the part files, so a reader never sees a manifest without its data.
    """

    def __init__(self, root: str, error: type[Exception] = StorageError) -> None:
        self.root = os.fspath(root).rstrip("/")
        self.error = error
        self.fs, self._base = filesystem_for(self.root)

    def _key(self, *parts: str) -> str:
        return "/".join([self._base, *[p.strip("/") for p in parts if p]])

    def _wrap(self, exc: BaseException, op: str, *parts: str) -> Exception:
        return self.error(str(describe_error(exc, self.path(*parts), op)))

    def file_info(self, rel: str) -> Any:
        """pyarrow's FileInfo of one object (size, mtime_ns): a listing, nothing read."""
        return self.fs.get_file_info(self._key(rel))

    def exists(self, *parts: str) -> bool:
        from pyarrow import fs

        try:
            return self.fs.get_file_info(self._key(*parts)).type != fs.FileType.NotFound
        except OSError as exc:
            raise self._wrap(exc, "stat", *parts) from exc

    def makedirs(self, *parts: str) -> None:
        """Object stores have no folders; nothing to make."""

    def parts(self, folder: str) -> list[str]:
        import fnmatch

        from pyarrow import fs

        try:
            infos = self.fs.get_file_info(fs.FileSelector(self._key(folder), allow_not_found=True))
        except OSError as exc:
            raise self._wrap(exc, "list", folder) from exc
        names = sorted(i.base_name for i in infos
                       if i.type == fs.FileType.File and fnmatch.fnmatch(i.base_name, PART_GLOB))
        return [f"{folder}/{n}" for n in names]

    def _delete(self, rel: str) -> None:
        self.fs.delete_file(self._key(rel))

    def remove(self, *parts: str) -> None:
        from pyarrow import fs

        info = self.fs.get_file_info(self._key(*parts))
        if info.type == fs.FileType.Directory:
            self.fs.delete_dir(self._key(*parts))
        elif info.type == fs.FileType.File:
            self.fs.delete_file(self._key(*parts))

    def write_parquet(self, table: pa.Table, rel: str) -> None:
        import pyarrow.parquet as pq

        try:
            pq.write_table(table, self._key(rel), filesystem=self.fs, row_group_size=max(1, len(table)),
                           **PARQUET_WRITE)
        except OSError as exc:
            raise self._wrap(exc, "write", rel) from exc

    def read_parquet(self, rel: str) -> pa.Table:
        import pyarrow.parquet as pq

        try:
            return pq.read_table(self._key(rel), filesystem=self.fs, page_checksum_verification=True)
        except OSError as exc:
            raise self._wrap(exc, "read", rel) from exc

    def write_text_atomic(self, rel: str, text: str) -> None:
        try:
            with self.fs.open_output_stream(self._key(rel)) as out:
                out.write(text.encode("utf-8"))
        except OSError as exc:
            raise self._wrap(exc, "write", rel) from exc

    def read_text(self, rel: str) -> str:
        try:
            with self.fs.open_input_stream(self._key(rel)) as src:
                return src.read().decode("utf-8")
        except OSError as exc:
            raise self._wrap(exc, "read", rel) from exc


def folder(root: str, error: type[Exception] = StorageError) -> LocalFolder | S3Folder:
    """The folder at `root`: `s3://bucket/prefix`, else a local path (`file://` allowed)."""
    return S3Folder(root, error) if is_s3(root) else LocalFolder(root, error)
