"""Reading manifests from disk: multi-document YAML (or JSON), `kind: List`, folders of files.

Each object remembers where it came from so every later error can point at the file
and document (`queues.yaml:3`), and, inside a List, the item.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from quotas.problems import Problem

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Source:
    """Where an object was read: file, 1-based document number, optional List item, first line."""

    file: str
    document: int
    item: int | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.document}"
        return where if self.item is None else f"{where}: items[{self.item}]"


@dataclass(frozen=True)
class RawObject:
    """A manifest as read, before it is parsed into a model."""

    source: Source
    data: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.data.get("kind") or "")

    @property
    def api_version(self) -> str:
        return str(self.data.get("apiVersion") or "")

    @property
    def name(self) -> str:
        meta = self.data.get("metadata")
        return str(meta.get("name") or "") if isinstance(meta, dict) else ""

    @property
    def label(self) -> str:
        """`Kind/name` as messages show it."""
        return f"{self.kind or '<no kind>'}/{self.name or '<no name>'}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and keeps timestamps as text, as Kubernetes does.

    YAML resolves a repeated key silently to the last one, and an unquoted
    `2024-01-01T00:00:00Z` to a datetime, where the API server sees a string.
    """

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def manifest_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[Problem]]:
    """Expand folders (recursively, sorted, YAML and JSON files only); missing paths are errors."""
    files: list[Path] = []
    errors: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in MANIFEST_SUFFIXES)
            if not found:
                errors.append(Problem(str(path), "", "", "folder holds no .yaml, .yml or .json files"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            errors.append(Problem(str(path), "", "", "no such file or folder"))
    return files, errors


def _documents(text: str, name: str) -> Iterator[tuple[int, int, Any] | Problem]:
    """(document number, first line, data) for each document, or a Problem where YAML is broken."""
    loader = _UniqueKeyLoader(text)
    number = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            number += 1
            if node is None:
                continue
            line = node.start_mark.line + 1
            try:
                yield number, line, loader.construct_document(node)
            except yaml.YAMLError as exc:
                yield Problem(f"{name}:{number}", "", "", _yaml_message(exc))
    except yaml.YAMLError as exc:
        yield Problem(f"{name}:{number + 1}", "", "", _yaml_message(exc))
    finally:
        loader.dispose()


def _yaml_message(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"invalid YAML: {problem}{at}"


def load_text(text: str, name: str) -> tuple[list[RawObject], list[Problem]]:
    """Objects of one file's text; `name` is what messages call the file."""
    objects: list[RawObject] = []
    errors: list[Problem] = []
    for entry in _documents(text, name):
        if isinstance(entry, Problem):
            errors.append(entry)
            continue
        number, line, data = entry
        if data is None:
            continue
        source = Source(name, number, line=line)
        if not isinstance(data, dict):
            errors.append(Problem(str(source), "", "", f"expected a mapping (an object), got {type(data).__name__}"))
            continue
        kind = str(data.get("kind") or "")
        if kind == "List" or (kind.endswith("List") and "items" in data):
            items = data.get("items")
            if not isinstance(items, list):
                errors.append(Problem(str(source), "", "", f"{kind}: items: must be a list"))
                continue
            for index, item in enumerate(items):
                item_source = Source(name, number, index, line)
                if isinstance(item, dict):
                    objects.append(RawObject(item_source, item))
                else:
                    errors.append(Problem(str(item_source), "", "", f"expected a mapping, got {type(item).__name__}"))
            continue
        objects.append(RawObject(source, data))
    return objects, errors


def load_paths(paths: Iterable[str | Path]) -> tuple[list[RawObject], list[Problem]]:
    """Every object under the given files and folders, in order, with the errors of what could not be read."""
    files, errors = manifest_files(paths)
    objects: list[RawObject] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(Problem(str(path), "", "", f"cannot read: {exc}"))
            continue
        found, problems = load_text(text, str(path))
        objects.extend(found)
        errors.extend(problems)
    return objects, errors
