"""Environment variables set for a block of code, then put back as they were."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def temporary_environ(values: dict[str, str]) -> Iterator[None]:
    """`values` in os.environ inside the block; afterwards every key is as before (unset again if
    it was unset), also when the block raises."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
