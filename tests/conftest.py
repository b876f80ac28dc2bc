"""Shared test helpers: write manifests to a temporary folder and load them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml


@pytest.fixture
def write_yaml(tmp_path: Path) -> Callable[..., Path]:
    """Write documents (dicts) or raw text to a file under tmp_path and return its path."""

    def write(name: str, *docs: Any) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if len(docs) == 1 and isinstance(docs[0], str):
            path.write_text(docs[0])
        else:
            path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
        return path

    return write
