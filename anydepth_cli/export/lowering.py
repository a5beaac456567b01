"""An exported float32 ONNX graph lowered to fp16 or to int8 (ONNX Runtime static quantisation), for edge runtimes.

fp16 keeps in float32 what fp16 would spoil: normalisations (LayerNormalization, BatchNormalization, Softmax), the
final activation (everything after the last convolution), index and position arithmetic (nodes that depend on the
input's shape but not on its values: ranges, grids, rotary tables) and DySample's sampling positions (the
arithmetic from its offset convolutions to GridSample, and GridSample itself: fp16 holds a pixel position of 300 only
to a quarter pixel). The model's input and output stay float32.

int8 quantises weights per channel (int8) and activations (uint8) with ranges calibrated on the user's photos, in
QDQ form, which ONNX Runtime runs with VNNI or AMX int8 kernels where the CPU has them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

if TYPE_CHECKING:
    import onnx

EXPORT_PRECISIONS = ("fp32", "fp16", "int8")
FP32_OPS = ("LayerNormalization", "BatchNormalization", "InstanceNormalization", "GroupNormalization", "Softmax",
            "GridSample")
"""Operators fp16 lowering leaves in float32 (with the converter's own ops that have no fp16 kernel)."""


def _consumers(graph: "onnx.GraphProto") -> dict[str, list["onnx.NodeProto"]]:
    found: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def _producers(graph: "onnx.GraphProto") -> dict[str, "onnx.NodeProto"]:
    return {name: node for node in graph.node for name in node.output}


def value_dependent_nodes(graph: "onnx.GraphProto") -> set[str]:
    """Names of the nodes whose outputs depend on the input's values (not only on its shape)."""
    consumers = _consumers(graph)
    reached: set[str] = set()
    frontier = [value.name for value in graph.input]
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            if node.name in reached or node.op_type == "Shape":
                continue
            reached.add(node.name)
            frontier.extend(node.output)
    return reached


def sampling_position_nodes(graph: "onnx.GraphProto") -> set[str]:
    """Names of the nodes computing GridSample's sampling grids, back to (not including) the convolutions that
    predict the offsets."""
    producers = _producers(graph)
    found: set[str] = set()
    frontier = [node.input[1] for node in graph.node if node.op_type == "GridSample"]
    while frontier:
        node = producers.get(frontier.pop())
        if node is None or node.name in found or node.op_type == "Conv":
            continue
        found.add(node.name)
        frontier.extend(node.input)
    return found


def final_activation_nodes(graph: "onnx.GraphProto") -> set[str]:
    """Names of the nodes after the last convolution (the final activation and its floor)."""
    last_conv = max((i for i, node in enumerate(graph.node) if node.op_type == "Conv"), default=None)
    return set() if last_conv is None else {node.name for node in graph.node[last_conv + 1:]}


def to_fp16(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """The model with its weights and activations in fp16, except what the module docstring keeps in float32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    graph = model.graph
    for index, node in enumerate(graph.node):
        node.name = node.name or f"node_{index}"
    dependent = value_dependent_nodes(graph)
    kept = {node.name for node in graph.node if node.name not in dependent}
    kept |= sampling_position_nodes(graph) | final_activation_nodes(graph)
    lowered = convert_float_to_float16(model, keep_io_types=True, op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP32_OPS],
                                       node_block_list=sorted(kept))
    sort_topologically(lowered.graph)
    del lowered.graph.value_info[:]  # the converter leaves some intermediate types as they were before it
    return lowered


def sort_topologically(graph: "onnx.GraphProto") -> None:
    """Order the graph's nodes so that each comes after the nodes it reads from (the fp16 converter appends the
    casts it inserts at the end), keeping the existing order otherwise."""
    available = {value.name for value in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [node for node in pending if all(name in available for name in node.input)]
        if not ready:
            raise ValueError("the lowered graph has a cycle or reads a value nothing produces")
        chosen = {id(node) for node in ready}
        for node in ready:
            available.update(node.output)
        ordered.extend(ready)
        pending = [node for node in pending if id(node) not in chosen]
    copies = [type(node)() for node in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def to_int8(model: "onnx.ModelProto", batches: Iterable[np.ndarray], input_name: str) -> "onnx.ModelProto":
    """The model statically quantised to int8 (QDQ, per-channel int8 weights, uint8 activations), its activation
    ranges calibrated on `batches` (normalised images, each 1×3×H×W float32)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[np.ndarray] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    with tempfile.TemporaryDirectory(prefix="anydepth-int8-") as folder:
        source, target = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        onnx.save_model(model, str(source))
        quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return onnx.load_model(str(target))
