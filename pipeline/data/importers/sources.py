"""Where an importer's source files come from, and how they are named.

A source is a local path, ``file://``, ``builtin://<dataset>[/<file>]`` (shipped in
``pipeline/data/builtin``), ``music21:<folder>[/<file>]`` (the corpus inside the music21 package)
or ``s3://bucket/key`` (downloaded first, ``pipeline.storage``); a folder gives its files. Each
file is a pair (shown, local): the name errors and the manifest's lineage use (the ``builtin://``
or ``s3://`` URI where there is one) and the local file read. A file's name may give its split
(``X_TRAIN.ts`` -> "train") and, without that token, the dataset's name.
"""

from __future__ import annotations

import glob
import os
import re
from collections import Counter
from importlib import resources

from pipeline import storage
from pipeline.config import BUILTIN_SCHEME, MUSIC21_SCHEME
from pipeline.data.dataset import DatasetError, SourceFile, sources_for

SPLIT_TOKEN = re.compile(r"(?:^|[_\-.])(train|test|val|valid|validation)$", re.IGNORECASE)
SPLIT_NAMES = {"train": "train", "test": "test", "val": "val", "valid": "val",
               "validation": "val"}


def _builtin_root():
    return resources.files("pipeline.data") / "builtin"


def builtin_datasets() -> dict[str, list[str]]:
    """Datasets shipped inside the package: folder name -> file names."""
    out = {}
    for d in sorted(_builtin_root().iterdir(), key=lambda p: p.name):
        if d.is_dir() and not d.name.startswith(("_", ".")):
            out[d.name] = sorted(f.name for f in d.iterdir() if f.is_file())
    return out


def resolve_source(path: str) -> str:
    """Local path of a source: ``builtin://<dataset>[/<file>]`` -> the file (or folder) shipped
    in ``pipeline/data/builtin``; ``music21:<folder>[/<file>]`` -> the music21 corpus's;
    ``s3://bucket/key`` -> a local copy of the object (or of every object under the prefix);
    ``file://p`` and plain paths -> absolute, ``~`` expanded.

    Raises FileNotFoundError naming the path (and the builtin datasets for ``builtin://``).
    """
    path = os.fspath(path)
    if path.startswith(BUILTIN_SCHEME):
        rel = path[len(BUILTIN_SCHEME):].strip("/")
        target = _builtin_root().joinpath(*[p for p in rel.split("/") if p]) if rel else None
        if target is None or not (target.is_file() or target.is_dir()):
            available = "; ".join(
                f"builtin://{d}/{f}" for d, files in builtin_datasets().items() for f in files
            )
            raise FileNotFoundError(
                f"no builtin source {path!r}; available: {available or '(none)'}"
            )
        # The package is installed from a directory, so the resource is a real path.
        return str(target)
    if path.startswith(MUSIC21_SCHEME):
        return music21_corpus(path)
    if storage.is_s3(path):
        return storage.download(path)  # a file, or a folder for a prefix; DOWNLOADED knows its objects
    if path.startswith("file://"):
        path = path[len("file://"):]
    elif "://" in path:
        raise DatasetError(f"source {path!r}: expected a local path, file://, builtin:// or s3://")
    local = storage.local_path(path)
    if not os.path.exists(local):
        raise FileNotFoundError(f"source not found: {path} (looked at {local})")
    return local


def music21_corpus(path: str) -> str:
    """``music21:<folder>[/<file>]`` -> that folder or file of the corpus music21 ships
    (``music21:bach``: the Bach chorales), found without importing music21."""
    import importlib.util

    spec = importlib.util.find_spec("music21")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"source {path!r} is in the music21 corpus, and music21 is not installed: "
                           "pip install 'recur[music]' (or pip install music21)")
    corpus = os.path.join(list(spec.submodule_search_locations)[0], "corpus")
    rel = [p for p in path[len(MUSIC21_SCHEME):].split("/") if p not in ("", ".", "..")]
    target = os.path.join(corpus, *rel)
    if not rel or not os.path.exists(target):
        folders = sorted(d for d in os.listdir(corpus)
                         if os.path.isdir(os.path.join(corpus, d)) and not d.startswith(("_", ".")))
        raise FileNotFoundError(f"no music21 corpus source {path!r} (looked at {target}); its folders: "
                                f"{', '.join(folders)}")
    return target


def shown_name(shown: str, local: str) -> str:
    """How a source is named in the manifest: a file downloaded from S3 by its URI."""
    obj = storage.DOWNLOADED.get(local)
    return obj.uri if obj is not None else shown


def as_list(paths: list[str] | str) -> list[str]:
    """The source paths as a non-empty list (one path may be given as is)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [os.fspath(paths)]
    if not paths:
        raise ValueError("no source paths given")
    return [os.fspath(p) for p in paths]


def named_once(files: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(shown, local) pairs with downloaded files shown by their URI; DatasetError when one file
    is given more than once."""
    out = [(shown_name(shown, local), local) for shown, local in files]
    twice = [f for f, n in Counter(local for _, local in out).items() if n > 1]
    if twice:
        raise DatasetError(f"source file given more than once: {twice}")
    return out


def expand(paths: list[str] | str, ext: str | tuple[str, ...]) -> list[tuple[str, str]]:
    """(display name, local file) for every source; folders give their ``*.ext`` files (any of
    the extensions when ``ext`` is a tuple)."""
    out: list[tuple[str, str]] = []
    for p in as_list(paths):
        local = resolve_source(p)
        if os.path.isdir(local):
            exts = (ext,) if isinstance(ext, str) else ext
            found = sorted(f for e in exts
                           for f in glob.glob(os.path.join(local, "**", f"*.{e}"), recursive=True))
            if not found:
                raise FileNotFoundError(f"no {' or '.join(f'*.{e}' for e in exts)} files in {p} ({local})")
            for f in found:
                rel = os.path.relpath(f, local).replace(os.sep, "/")
                named = p.startswith((BUILTIN_SCHEME, MUSIC21_SCHEME, "s3://"))
                shown = f"{p.rstrip('/')}/{rel}" if named else f
                out.append((shown, f))
        else:
            out.append((p if p.startswith((BUILTIN_SCHEME, MUSIC21_SCHEME, "s3://")) else local, local))
    return named_once(out)


def read_text_file(path: str, shown: str | None = None) -> str:
    """A source file's text as strict UTF-8 (a leading byte-order mark dropped); DatasetError naming
    the file (`shown`, default the path), line and byte offset of the first undecodable byte."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DatasetError(
            f"{shown or path}: not valid UTF-8 at byte offset {e.start} (line {line}, byte {column} of "
            f"the line): {e.reason} (byte 0x{data[e.start]:02x}); convert the file to UTF-8, e.g. "
            "`iconv -f latin1 -t utf-8`"
        ) from None


def source_files(files: list[tuple[str, str]]) -> list[SourceFile]:
    """The manifest's lineage of (shown, local) files: size and sha256, named as shown."""
    return [s.model_copy(update={"path": shown})
            for s, (shown, _) in zip(sources_for([f for _, f in files]), files)]


def split_of(path: str) -> str | None:
    """Split named by a file's stem (``X_TRAIN.ts`` -> "train", ``x-valid`` -> "val"), or None."""
    m = SPLIT_TOKEN.search(stem(path))
    return SPLIT_NAMES[m.group(1).lower()] if m else None


def stem(path: str) -> str:
    """A file's name without its extension (row ids start with it)."""
    base = os.path.basename(path.rstrip("/"))
    for ext in (".parquet", ".ts"):
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return os.path.splitext(base)[0]


def base_name(path: str) -> str:
    """Dataset name from a file: the stem without its split token."""
    name = stem(path)
    m = SPLIT_TOKEN.search(name)
    return (name[: m.start()] if m else name) or name


def check_unique_stems(files: list[tuple[str, str]], ids: str = "row ids would collide") -> None:
    """DatasetError when two source files share a stem: the row ids made from it (``ids``) would
    collide."""
    clash = [s for s, k in Counter(stem(f) for _, f in files).items() if k > 1]
    if clash:
        raise DatasetError(f"two source files share the stem(s) {clash}; {ids}")
