"""Where paths point: a local folder or `s3://bucket/prefix`, the same code for both.

Credentials and the endpoint come from the standard places only: AWS_* variables, the shared
config and credentials files (AWS_PROFILE), and `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` for
an S3-compatible endpoint; never from recur's config files, and they are never logged. boto3
lists buckets and reads object metadata (size, ETag, version id); pyarrow's S3 filesystem reads
and writes Parquet, and is what Ray Data and Ray Train are handed.
"""

from pipeline.storage.folders import (
    PARQUET_WRITE,
    PART_GLOB,
    LocalFolder,
    S3Folder,
    folder,
)
from pipeline.storage.paths import (
    DOWNLOADED,
    S3_SCHEME,
    S3Object,
    StorageError,
    check_bucket,
    describe_error,
    download,
    endpoint_url,
    error_code,
    filesystem_for,
    is_not_found,
    is_s3,
    join,
    list_objects,
    local_path,
    s3_client,
    s3_filesystem,
    split_s3,
)

__all__ = [
    "DOWNLOADED",
    "LocalFolder",
    "PARQUET_WRITE",
    "PART_GLOB",
    "S3Folder",
    "S3Object",
    "S3_SCHEME",
    "StorageError",
    "check_bucket",
    "describe_error",
    "download",
    "endpoint_url",
    "error_code",
    "filesystem_for",
    "folder",
    "is_not_found",
    "is_s3",
    "join",
    "list_objects",
    "local_path",
    "s3_client",
    "s3_filesystem",
    "split_s3",
]
