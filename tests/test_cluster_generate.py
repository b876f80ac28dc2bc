"""`simulator.cluster_gen.generate_nodes` and `tessera cluster generate`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from quotas.bundle import load_bundle
from quotas.kube import Node
from quotas.problems import errors_in
from scheduler.cluster import Cluster
from simulator.cluster_gen import (
    BLOCK_LABEL,
    GPU_MODEL_LABEL,
    HOSTNAME_LABEL,
    RACK_LABEL,
    ClusterSpecError,
    dump_nodes,
    generate_nodes,
)
from tessera.cli import app

GPU = "nvidia.com/gpu"
runner = CliRunner()


def test_counts_labels_and_resources() -> None:
    nodes = generate_nodes(16, gpus_per_node=8, gpu_model="H100", racks=4, blocks=2)
    assert len(nodes) == 16
    names = [n["metadata"]["name"] for n in nodes]
    assert names[0] == "node-00" and names[-1] == "node-15" and len(set(names)) == 16
    for node in nodes:
        labels = node["metadata"]["labels"]
        assert labels[HOSTNAME_LABEL] == node["metadata"]["name"]
        assert labels[GPU_MODEL_LABEL] == "H100"
        assert {BLOCK_LABEL, RACK_LABEL} <= set(labels)
        assert node["status"]["allocatable"] == node["status"]["capacity"] == {
            "cpu": "128", "memory": "1Ti", "pods": "110", GPU: "8"}
    cluster = Cluster.from_nodes(Node.model_validate(n) for n in nodes)
    assert cluster.capacity(GPU) == 16 * 8 * 1000


def test_even_spread_over_blocks_and_racks() -> None:
    nodes = generate_nodes(64, racks=8, blocks=2)
    per_rack = Counter(n["metadata"]["labels"][RACK_LABEL] for n in nodes)
    per_block = Counter(n["metadata"]["labels"][BLOCK_LABEL] for n in nodes)
    assert len(per_rack) == 8 and set(per_rack.values()) == {8}
    assert per_block == {"block-0": 32, "block-1": 32}
    racks_in_block: dict[str, set[str]] = {}
    for n in nodes:
        labels = n["metadata"]["labels"]
        racks_in_block.setdefault(labels[BLOCK_LABEL], set()).add(labels[RACK_LABEL])
    assert [len(r) for r in racks_in_block.values()] == [4, 4]
    assert not racks_in_block["block-0"] & racks_in_block["block-1"]  # each rack in exactly one block
    # nodes of a rack are consecutive
    assert [n["metadata"]["labels"][RACK_LABEL] for n in nodes[:9]] == ["rack-0"] * 8 + ["rack-1"]


def test_custom_resources_and_cpu_only_nodes() -> None:
    [node] = generate_nodes(1, gpus_per_node=4, gpu_model="A100", cpu_per_node="96", memory_per_node="768Gi",
                            pods_per_node=64, name_prefix="gpu", labels={"pool": "a"})
    assert node["metadata"]["name"] == "gpu-0" and node["metadata"]["labels"]["pool"] == "a"
    assert node["status"]["allocatable"] == {"cpu": "96", "memory": "768Gi", "pods": "64", GPU: "4"}
    [cpu_node] = generate_nodes(1, gpus_per_node=0)
    assert GPU not in cpu_node["status"]["allocatable"] and GPU_MODEL_LABEL not in cpu_node["metadata"]["labels"]
    assert cpu_node["status"]["allocatable"]["cpu"] == "64"
    [tainted] = generate_nodes(1, taints=[{"key": GPU, "value": "present", "effect": "NoSchedule"}])
    assert Node.model_validate(tainted).spec.taints[0].key == GPU


@pytest.mark.parametrize(
    ("kwargs", "option", "text"),
    [
        ({"nodes": 8, "racks": 3, "blocks": 2}, "racks", "3 racks cannot be split evenly over 2 blocks"),
        ({"nodes": 10, "racks": 4, "blocks": 2}, "nodes", "10 nodes cannot be spread evenly over 4 racks"),
        ({"nodes": 0}, "nodes", "must be at least 1"),
        ({"nodes": 4, "gpus_per_node": -1}, "gpus-per-node", "must be at least 0"),
        ({"nodes": 4, "blocks": 0}, "blocks", "must be at least 1"),
        ({"nodes": 4, "gpu_model": "H100 SXM"}, "gpu-model", "must be empty or letters"),
        ({"nodes": 4, "cpu_per_node": "lots"}, "cpu", "not a Kubernetes quantity"),
        ({"nodes": 4, "memory_per_node": "0"}, "memory", "must be greater than 0"),
        ({"nodes": 4, "name_prefix": "Node_"}, "name-prefix", "DNS-1123"),
    ],
)
def test_bad_arguments(kwargs: dict, option: str, text: str) -> None:
    with pytest.raises(ClusterSpecError) as exc:
        generate_nodes(**kwargs)
    assert exc.value.option == option and text in str(exc.value)


def test_output_validates_with_load_bundle(tmp_path: Path) -> None:
    path = tmp_path / "nodes.yaml"
    path.write_text(dump_nodes(generate_nodes(8, racks=2, blocks=2), "a comment\nover two lines"))
    bundle, problems = load_bundle([path])
    assert problems == []
    assert len(bundle.nodes) == 8


def test_cli_writes_file(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "nodes.yaml"
    result = runner.invoke(app, ["cluster", "generate", "--nodes", "16", "--gpus-per-node", "4", "--gpu-model", "A100",
                                 "--racks", "4", "--blocks", "2", "--cpu", "64", "--memory", "512Gi", "-o", str(out)])
    assert result.exit_code == 0, result.output
    bundle, problems = load_bundle([out])
    assert errors_in(problems) == [] and problems == []
    assert len(bundle.nodes) == 16
    node = bundle.nodes["node-00"]
    assert node.metadata.labels[GPU_MODEL_LABEL] == "A100"
    assert {str(k): str(v) for k, v in node.status.allocatable.items()} == {"cpu": "64", "memory": "549755813888",
                                                                          "pods": "110", GPU: "4"}
    assert len({n.metadata.labels[RACK_LABEL] for n in bundle.nodes.values()}) == 4


def test_cli_stdout_is_multi_document_yaml() -> None:
    result = runner.invoke(app, ["cluster", "generate", "--nodes", "4", "--racks", "2"])
    assert result.exit_code == 0
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert [d["kind"] for d in docs] == ["Node"] * 4
    assert result.stdout.startswith("# tessera cluster generate: 4 nodes x 8 H100 GPUs")


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--nodes", "10", "--racks", "4"], "error: --nodes: 10 nodes cannot be spread evenly over 4 racks"),
        (["--nodes", "8", "--racks", "3", "--blocks", "2"], "error: --racks: 3 racks cannot be split evenly over 2 blocks"),
        (["--nodes", "8", "--memory", "lots"], "error: --memory: not a Kubernetes quantity"),
    ],
)
def test_cli_bad_arguments_exit_2(args: list[str], text: str) -> None:
    result = runner.invoke(app, ["cluster", "generate", *args])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(text)


def test_cli_unwritable_output(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(app, ["cluster", "generate", "--nodes", "1", "-o", str(blocker / "nodes.yaml")])
    assert result.exit_code == 2 and "cannot write" in result.stderr
