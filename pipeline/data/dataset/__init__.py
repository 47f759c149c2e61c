"""The canonical dataset on disk: folder layout and Arrow schema (schema.py), manifest.json
(manifest.py), Arrow <-> numpy (arrays.py), data hash and file fingerprints (hashing.py),
normalization and length statistics (stats.py), write and read (io.py).

The names other packages use are importable from here: ``from pipeline.data.dataset import
Manifest, read_split``.
"""

from pipeline.data.dataset.arrays import XParts, as_2d_x, canonical_table, make_table, x_array, x_to_numpy
from pipeline.data.dataset.hashing import compute_data_hash, files_fingerprint, sources_for
from pipeline.data.dataset.io import (
    folder,
    manifest_path,
    read_manifest,
    read_quarantine,
    read_split,
    read_split_parts,
    split_dir,
    split_files,
    write_dataset,
)
from pipeline.data.dataset.manifest import (
    FeatureSpec,
    LengthStats,
    Manifest,
    Normalization,
    SourceFile,
    SplitInfo,
)
from pipeline.data.dataset.schema import (
    ARROW_SCHEMA,
    BOS,
    BOS_ID,
    EOS,
    EOS_ID,
    EXTRA_COLUMNS,
    MANIFEST_FILE,
    PAD,
    PAD_ID,
    PART_FILE,
    QUARANTINE,
    SPECIALS,
    SPLITS,
    TASK_NAMES,
    TOKEN_TYPE,
    UNK,
    UNK_ID,
    X_TYPE,
    Y_TYPES,
    DatasetError,
    schema_for,
)
from pipeline.data.dataset.stats import STD_FLOOR, fit_normalization, length_stats

__all__ = [
    "ARROW_SCHEMA", "BOS", "BOS_ID", "EOS", "EOS_ID", "EXTRA_COLUMNS", "MANIFEST_FILE", "PAD", "PAD_ID",
    "PART_FILE", "QUARANTINE", "SPECIALS", "SPLITS", "STD_FLOOR", "TASK_NAMES", "TOKEN_TYPE", "UNK",
    "UNK_ID", "X_TYPE", "Y_TYPES", "DatasetError", "FeatureSpec", "LengthStats", "Manifest",
    "Normalization", "SourceFile", "SplitInfo", "XParts", "as_2d_x", "canonical_table",
    "compute_data_hash", "files_fingerprint", "fit_normalization", "folder", "length_stats",
    "make_table", "manifest_path", "read_manifest", "read_quarantine", "read_split",
    "read_split_parts", "schema_for",
    "sources_for", "split_dir", "split_files", "write_dataset", "x_array", "x_to_numpy",
]
