"""Reading manifests: multi-document YAML, Lists, folders, and where each object came from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from quotas.loader import Source, load_paths, load_text

FLAVOR = {"apiVersion": "tessera.dev/v1alpha1", "kind": "ResourceFlavor", "metadata": {"name": "a100"}}


def test_documents_are_numbered_from_one_and_empty_ones_still_count() -> None:
    text = "---\n# nothing here\n---\nkind: A\nmetadata: {name: x}\n---\n---\nkind: B\nmetadata: {name: y}\n"
    objects, errors = load_text(text, "f.yaml")
    assert errors == []
    assert [(o.kind, o.source.document) for o in objects] == [("A", 2), ("B", 4)]
    assert str(objects[1].source) == "f.yaml:4"
    assert objects[0].source.line == 4


def test_list_items_keep_their_index() -> None:
    text = "apiVersion: v1\nkind: List\nitems:\n- {kind: Node, metadata: {name: n0}}\n- {kind: Node, metadata: {name: n1}}\n"
    objects, errors = load_text(text, "nodes.yaml")
    assert errors == []
    assert [o.name for o in objects] == ["n0", "n1"]
    assert objects[1].source == Source("nodes.yaml", 1, 1, 1)
    assert str(objects[1].source) == "nodes.yaml:1: items[1]"


def test_typed_lists_such_as_nodelist_expand_too() -> None:
    objects, _ = load_text("kind: NodeList\nitems: [{kind: Node, metadata: {name: n0}}]\n", "n.yaml")
    assert [o.label for o in objects] == ["Node/n0"]


def test_broken_yaml_names_file_document_and_line_and_keeps_earlier_documents() -> None:
    text = "kind: A\nmetadata: {name: ok}\n---\nkind: B\nmetadata: {name: [unclosed\n"
    objects, errors = load_text(text, "bad.yaml")
    assert [o.name for o in objects] == ["ok"]
    assert len(errors) == 1
    assert str(errors[0]).startswith("bad.yaml:2: invalid YAML")
    assert "line" in errors[0].message


def test_duplicate_keys_are_refused() -> None:
    objects, errors = load_text("kind: A\nkind: B\n", "dup.yaml")
    assert objects == []
    assert "duplicate key 'kind'" in errors[0].message


def test_non_mapping_documents_are_errors() -> None:
    objects, errors = load_text("- a\n- b\n", "x.yaml")
    assert objects == [] and "expected a mapping" in errors[0].message


def test_folders_are_read_recursively_in_order(write_yaml: Callable[..., Path], tmp_path: Path) -> None:
    write_yaml("b/two.yaml", {**FLAVOR, "metadata": {"name": "two"}})
    write_yaml("a/one.yml", {**FLAVOR, "metadata": {"name": "one"}})
    (tmp_path / "notes.txt").write_text("not a manifest")
    objects, errors = load_paths([tmp_path])
    assert errors == []
    assert [o.name for o in objects] == ["one", "two"]


def test_json_files_load(tmp_path: Path) -> None:
    import json

    (tmp_path / "f.json").write_text(json.dumps(FLAVOR))
    objects, errors = load_paths([tmp_path / "f.json"])
    assert errors == [] and objects[0].name == "a100"


def test_missing_paths_are_errors_but_others_still_load(write_yaml: Callable[..., Path], tmp_path: Path) -> None:
    good = write_yaml("good.yaml", FLAVOR)
    objects, errors = load_paths([tmp_path / "missing.yaml", good])
    assert [o.name for o in objects] == ["a100"]
    assert str(errors[0]).endswith("missing.yaml: no such file or folder")
