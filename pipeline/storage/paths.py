"""Paths and objects: a local path or `s3://bucket/key`, the S3 client and filesystem recur uses
(credentials and endpoint from the standard places only), listing, downloading, and the errors
that name the URI and what to do."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from pipeline.errors import UserError

if TYPE_CHECKING:
    pass

S3_SCHEME = "s3://"


class StorageError(UserError, RuntimeError):
    """An object store refused or could not do an operation; the message names the bucket."""


def is_s3(path: str | os.PathLike) -> bool:
    return os.fspath(path).startswith(S3_SCHEME)


def split_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b` -> ("bucket", "a/b")."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StorageError(f"{uri!r} is not an s3://bucket/prefix URI")
    return parsed.netloc, parsed.path.lstrip("/")


def join(root: str, *parts: str) -> str:
    """Join path parts with `/` for URIs and os.path for local folders."""
    if is_s3(root):
        return "/".join([root.rstrip("/"), *[p.strip("/") for p in parts if p]])
    return os.path.join(root, *parts)


def endpoint_url() -> str | None:
    """The S3 endpoint from the environment (boto3's own variables), or None for AWS."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def s3_client() -> Any:
    """A boto3 S3 client on the environment's credentials and endpoint."""
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=endpoint_url(), region_name=_region())


def s3_filesystem() -> Any:
    """pyarrow's S3 filesystem on the same credentials and endpoint as `s3_client`.

    Credentials that boto3 resolved from variables or profile files are handed to pyarrow
    explicitly, so the filesystem works unchanged when Ray ships it to a worker whose process
    has other variables; anything else (instance roles, SSO) is left to pyarrow's own chain.
    """
    from pyarrow import fs

    kwargs: dict[str, Any] = {}
    endpoint = endpoint_url()
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    if _region():
        kwargs["region"] = _region()
    creds = _static_credentials()
    if creds is not None:
        kwargs.update(access_key=creds.access_key, secret_key=creds.secret_key)
        if creds.token:
            kwargs["session_token"] = creds.token
    return fs.S3FileSystem(**kwargs)


def _static_credentials() -> Any:
    import boto3

    credentials = boto3.session.Session().get_credentials()
    if credentials is None or credentials.method not in (
            "env", "shared-credentials-file", "config-file"):
        return None
    return credentials.get_frozen_credentials()


def local_path(path: str | os.PathLike) -> str:
    """A local path made absolute: a `file://` prefix dropped, `~` expanded."""
    path = os.fspath(path)
    if path.startswith("file://"):
        path = path[len("file://"):]
    return os.path.abspath(os.path.expanduser(path))


def filesystem_for(path: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path on it) for a local path or an s3:// URI."""
    from pyarrow import fs

    path = os.fspath(path)
    if is_s3(path):
        bucket, key = split_s3(path)
        return s3_filesystem(), f"{bucket}/{key}".rstrip("/")
    return fs.LocalFileSystem(), local_path(path)


def describe_error(exc: BaseException, uri: str, operation: str) -> StorageError:
    """A StorageError that names the bucket, the operation and what S3 answered."""
    bucket = split_s3(uri)[0] if is_s3(uri) else uri
    code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
    hint = {
        "NoSuchBucket": "the bucket does not exist",
        "404": "the bucket does not exist",
        "InvalidAccessKeyId": "the access key is not known to this endpoint (check AWS_ACCESS_KEY_ID)",
        "SignatureDoesNotMatch": "the secret key does not match (check AWS_SECRET_ACCESS_KEY)",
        "AccessDenied": "access denied for these credentials (AWS_ACCESS_KEY_ID, "
                        "AWS_SECRET_ACCESS_KEY or AWS_PROFILE)",
        "403": "access denied for these credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or "
               "AWS_PROFILE)",
    }.get(str(code), str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    where = f" at {endpoint_url()}" if endpoint_url() else ""
    return StorageError(f"S3 {operation} on bucket {bucket!r}{where} failed: {hint} ({uri})")


def check_bucket(uri: str, operation: str) -> None:
    """Fail fast, before any work, when the bucket of `uri` is missing or refuses us."""
    if not is_s3(uri):
        return
    bucket, _ = split_s3(uri)
    try:
        s3_client().head_bucket(Bucket=bucket)
    except Exception as exc:  # botocore ClientError, NoCredentialsError, EndpointConnectionError
        raise describe_error(exc, uri, operation) from exc


@dataclass(frozen=True)
class S3Object:
    uri: str
    key: str
    size: int
    etag: str
    version_id: str | None


def list_objects(uri: str) -> list[S3Object]:
    """The object at `uri`, or every object under it as a prefix, in key order."""
    bucket, key = split_s3(uri)
    client = s3_client()
    try:
        if key and not key.endswith("/"):
            try:
                return [_head(client, bucket, key)]
            except Exception as exc:
                if not is_not_found(exc):
                    raise
        prefix = key if not key or key.endswith("/") else key + "/"
        found = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                if not item["Key"].endswith("/"):
                    found.append(_head(client, bucket, item["Key"]))
    except StorageError:
        raise
    except Exception as exc:
        raise describe_error(exc, uri, "list") from exc
    return sorted(found, key=lambda o: o.key)


def error_code(exc: BaseException) -> str:
    """The error code S3 answered with (botocore's ClientError), "" for other errors."""
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def is_not_found(exc: BaseException) -> bool:
    """A missing key (HEAD answers a bare 404, GET NoSuchKey)."""
    return error_code(exc) in ("404", "NoSuchKey", "NotFound")


def _head(client: Any, bucket: str, key: str) -> S3Object:
    head = client.head_object(Bucket=bucket, Key=key)
    version = head.get("VersionId")
    return S3Object(uri=f"s3://{bucket}/{key}", key=key, size=int(head["ContentLength"]),
                    etag=str(head["ETag"]).strip('"'),
                    version_id=None if version in (None, "null") else version)


@lru_cache(maxsize=1)
def _download_root() -> str:
    root = tempfile.mkdtemp(prefix="recur-s3-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


# local copy -> the object it was downloaded from (its key, size, ETag and version id)
DOWNLOADED: dict[str, S3Object] = {}


def download(uri: str) -> str:
    """Copy an object, or every object under a prefix, to a local temporary folder.

    Returns the local file (one object) or folder (a prefix, keys below it kept as sub-paths).
    The exact version read is pinned: each object is fetched by the version id (or, on an
    unversioned bucket, with the ETag as a precondition) that `DOWNLOADED` records for it.
    """
    objects = list_objects(uri)
    bucket, key = split_s3(uri)
    if not objects:
        raise FileNotFoundError(f"no objects at {uri}")
    client = s3_client()
    single = len(objects) == 1 and objects[0].key == key
    base = os.path.join(_download_root(), bucket, *key.strip("/").split("/"))
    for obj in objects:
        rel = os.path.basename(obj.key) if single else obj.key[len(key.rstrip("/")) + 1 if key else 0:]
        target = base if single else os.path.join(base, *rel.split("/"))
        if DOWNLOADED.get(target) == obj and os.path.isfile(target):
            continue  # this very object version was fetched already by this process
        os.makedirs(os.path.dirname(target), exist_ok=True)
        extra = {"VersionId": obj.version_id} if obj.version_id else {"IfMatch": f'"{obj.etag}"'}
        try:
            body = client.get_object(Bucket=bucket, Key=obj.key, **extra)["Body"]
            with open(target, "wb") as fh:
                shutil.copyfileobj(body, fh, 1 << 20)
        except Exception as exc:
            raise describe_error(exc, obj.uri, "download") from exc
        DOWNLOADED[target] = obj
    return base
