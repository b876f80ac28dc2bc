"""Generated clusters: Node manifests with GPU-model and block/rack/host topology labels.

`tessera cluster generate` and the built-in default cluster (`simulator.defaults`) come from
here. The output is what `kubectl get nodes -o yaml` would print for such a cluster (only
the fields scheduling reads), so it loads through `quotas.bundle.load_bundle` like any
user's Node file.

Labels (documented in docs/simulator-inputs.md; the openb node loader sets the same GPU
model label, so one ResourceFlavor `nodeLabels` or one `gpu_spec` affinity works on both):

- ``kubernetes.io/hostname``: the node name (the innermost topology level);
- ``tessera.dev/block`` and ``tessera.dev/rack``: the node's block and rack;
- ``nvidia.com/gpu.product``: the GPU model (the label NVIDIA GPU feature discovery sets
  on real nodes); absent on nodes without GPUs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import yaml

from quotas.base import dns1123_label_problem, label_value_problem, qualified_name_problem
from quotas.quantity import format_quantity, parse_quantity

__all__ = [
    "BLOCK_LABEL",
    "ClusterSpecError",
    "DEFAULT_PODS_PER_NODE",
    "GPU_MODEL_LABEL",
    "GPU_RESOURCE",
    "HOSTNAME_LABEL",
    "RACK_LABEL",
    "TOPOLOGY_LEVELS",
    "dump_nodes",
    "generate_nodes",
]

HOSTNAME_LABEL = "kubernetes.io/hostname"
BLOCK_LABEL = "tessera.dev/block"
RACK_LABEL = "tessera.dev/rack"
GPU_MODEL_LABEL = "nvidia.com/gpu.product"
GPU_RESOURCE = "nvidia.com/gpu"
TOPOLOGY_LEVELS = (BLOCK_LABEL, RACK_LABEL, HOSTNAME_LABEL)
"""The Topology levels (outermost first) that generated nodes carry."""

DEFAULT_PODS_PER_NODE = 110
"""The kubelet's default `maxPods`."""

DEFAULT_CPU_PER_GPU = 16
DEFAULT_MEMORY_PER_GPU = 128 * 2**30  # 128Gi
DEFAULT_CPU_NODE = 64  # nodes without GPUs
DEFAULT_MEMORY_NODE = 256 * 2**30


class ClusterSpecError(ValueError):
    """A bad generator argument; ``option`` names it (``racks``), the message says what is wrong."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message


def _positive_quantity(option: str, value: str | int | float | Decimal) -> str:
    try:
        amount = parse_quantity(value)
    except ValueError:
        raise ClusterSpecError(option, f"not a Kubernetes quantity such as 128 or 1Ti, got {value!r}") from None
    if amount <= 0:
        raise ClusterSpecError(option, f"must be greater than 0, got {value!r}")
    return value if isinstance(value, str) else format_quantity(amount)


def _width(count: int) -> int:
    return max(1, len(str(max(count - 1, 0))))


def generate_nodes(
    nodes: int,
    gpus_per_node: int = 8,
    gpu_model: str = "H100",
    racks: int = 1,
    blocks: int = 1,
    cpu_per_node: str | int | None = None,
    memory_per_node: str | int | None = None,
    *,
    pods_per_node: int = DEFAULT_PODS_PER_NODE,
    name_prefix: str = "node",
    gpu_resource: str = GPU_RESOURCE,
    labels: Mapping[str, str] | None = None,
    taints: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Node manifests (plain dicts, camelCase) for ``nodes`` identical nodes spread evenly over
    ``blocks`` x ``racks / blocks`` racks, in block, rack, node order.

    ``racks`` is the total number of racks; it must be a multiple of ``blocks`` and divide
    ``nodes``. CPU defaults to 16 per GPU (64 without GPUs), memory to 128Gi per GPU (256Gi
    without GPUs). ``labels`` are added to every node; ``taints`` become ``spec.taints``.
    Raises `ClusterSpecError` naming the bad argument.
    """
    for option, value, low in (("nodes", nodes, 1), ("gpus-per-node", gpus_per_node, 0), ("racks", racks, 1),
                               ("blocks", blocks, 1), ("pods", pods_per_node, 1)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ClusterSpecError(option, f"must be an integer, got {value!r}")
        if value < low:
            raise ClusterSpecError(option, f"must be at least {low}, got {value}")
    if racks % blocks:
        raise ClusterSpecError(
            "racks", f"{racks} racks cannot be split evenly over {blocks} blocks (racks must be a multiple of blocks)"
        )
    if nodes % racks:
        raise ClusterSpecError(
            "nodes", f"{nodes} nodes cannot be spread evenly over {racks} racks (nodes must be a multiple of racks)"
        )
    if gpus_per_node:
        problem = label_value_problem(gpu_model) if gpu_model else "must not be empty"
        if problem:
            raise ClusterSpecError("gpu-model", f"{problem}, got {gpu_model!r}")
    if qualified_name_problem(gpu_resource):
        raise ClusterSpecError("gpu-resource", f"not a resource name, got {gpu_resource!r}")
    problem = dns1123_label_problem(f"{name_prefix}-{nodes - 1}")
    if problem:
        raise ClusterSpecError("name-prefix", f"node names {problem}, got {name_prefix!r}")
    extra = dict(labels or {})
    for key, value in extra.items():
        problem = qualified_name_problem(key) or label_value_problem(value)
        if problem:
            raise ClusterSpecError("labels", f"{key}={value}: {problem}")

    if cpu_per_node is None:
        cpu = str(DEFAULT_CPU_PER_GPU * gpus_per_node if gpus_per_node else DEFAULT_CPU_NODE)
    else:
        cpu = _positive_quantity("cpu", cpu_per_node)
    if memory_per_node is None:
        amount = DEFAULT_MEMORY_PER_GPU * gpus_per_node if gpus_per_node else DEFAULT_MEMORY_NODE
        memory = format_quantity(Decimal(amount), "BinarySI")
    else:
        memory = _positive_quantity("memory", memory_per_node)

    resources = {"cpu": cpu, "memory": memory, "pods": str(pods_per_node)}
    if gpus_per_node:
        resources[gpu_resource] = str(gpus_per_node)
    racks_per_block = racks // blocks
    nodes_per_rack = nodes // racks
    node_w, rack_w, block_w = _width(nodes), _width(racks), _width(blocks)
    out: list[dict[str, Any]] = []
    for i in range(nodes):
        rack = i // nodes_per_rack
        block = rack // racks_per_block
        name = f"{name_prefix}-{i:0{node_w}d}"
        node_labels = {
            HOSTNAME_LABEL: name,
            BLOCK_LABEL: f"block-{block:0{block_w}d}",
            RACK_LABEL: f"rack-{rack:0{rack_w}d}",
        }
        if gpus_per_node:
            node_labels[GPU_MODEL_LABEL] = gpu_model
        node_labels.update(extra)
        manifest: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": node_labels},
        }
        if taints:
            manifest["spec"] = {"taints": [dict(t) for t in taints]}
        manifest["status"] = {"capacity": dict(resources), "allocatable": dict(resources)}
        out.append(manifest)
    return out


def dump_nodes(manifests: Sequence[Mapping[str, Any]], comment: str = "") -> str:
    """Multi-document YAML of the manifests, with an optional leading comment line."""
    head = "".join(f"# {line}\n" for line in comment.splitlines()) if comment else ""
    return head + yaml.safe_dump_all([dict(m) for m in manifests], sort_keys=False, explicit_start=False)
