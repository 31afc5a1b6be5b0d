"""Rewrites of an ONNX graph for ONNX Runtime's CPU kernels: the same function, computed faster.

ONNX Runtime runs convolutions on x86 in a blocked channel layout (NCHWc, 8 channels a block on
AVX2). A tensor whose channel count is not a multiple of the block (the UNet's 12-filter first
level) leaves that layout: every convolution at full resolution is followed by a reorder back to
plain NCHW, and its consumer reorders it again. And its Softmax over the channel axis of an NCHW
tensor transposes the whole map twice around a kernel made for long rows, where each row here
has 4 values.

- `pad_channels`: give such convolutions zero filters up to the next multiple of 8, and their
  consumers zero weights for them. A zero filter with a zero bias gives 0 after ReLU and max
  pooling, so every original channel is computed as before; only the order of float additions
  in the kernels can differ (about 1e-6).
- `softmax_as_elementwise`: exp(x - max) / sum over the channel axis, in five broadcast ops.

On this project's 2-core AVX-512 CPU the two together take 0.88 of the network's time
(`scripts/benchmark.py models/bloodseg/2.2.2 models/bloodseg/2.2.3`). On a CPU without the
blocked kernels (ARM) the padding is only more arithmetic; the service targets x86.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

BLOCK = 8  # NCHWc block of ONNX Runtime's AVX2 kernels (AVX-512 uses 16; 8 measured better)
CHANNEL_CONSUMERS = {"Conv", "ConvTranspose"}
CHANNEL_PRESERVING = {"Relu", "MaxPool"}


def _attribute(node: onnx.NodeProto, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _weight_axes(node: onnx.NodeProto) -> tuple[int, int]:
    """(input-channel axis, output-channel axis) of a Conv or ConvTranspose weight."""
    return (1, 0) if node.op_type == "Conv" else (0, 1)


class _Graph:
    """Lookups over one graph: initializers as arrays, consumers, channel counts."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.arrays = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in self.graph.output}
        self.channels = self._channel_counts()

    def _channel_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.graph.node:
            if node.op_type in CHANNEL_CONSUMERS and node.input[1] in self.arrays:
                weight = self.arrays[node.input[1]]
                counts[node.output[0]] = weight.shape[_weight_axes(node)[1]] * (
                    _attribute(node, "group", 1) if node.op_type == "ConvTranspose" else 1
                )
            elif node.op_type in CHANNEL_PRESERVING and node.input[0] in counts:
                counts[node.output[0]] = counts[node.input[0]]
            elif (
                node.op_type == "Concat"
                and _attribute(node, "axis") == 1
                and all(name in counts for name in node.input)
            ):
                counts[node.output[0]] = sum(counts[name] for name in node.input)
        return counts

    def feeds_only_convolutions(self, tensor: str) -> bool:
        """Whether every use of `tensor`, through ReLU, max pooling and channel concatenation
        (of known channel counts), is the data input of an ungrouped convolution."""
        if tensor in self.outputs:
            return False
        for node in self.consumers.get(tensor, []):
            if node.op_type in CHANNEL_CONSUMERS and node.input[0] == tensor:
                if _attribute(node, "group", 1) != 1 or node.input[1] not in self.arrays:
                    return False
            elif node.op_type in CHANNEL_PRESERVING or (
                node.op_type == "Concat" and node.output[0] in self.channels
            ):
                if not self.feeds_only_convolutions(node.output[0]):
                    return False
            else:
                return False
        return True

    def set_array(self, node: onnx.NodeProto, position: int, array: np.ndarray) -> None:
        """Point the node's input at a new initializer (the old one may be shared)."""
        name = f"{node.input[position]}__padded"
        self.graph.initializer.append(numpy_helper.from_array(array.astype(np.float32), name))
        self.arrays[name] = array
        node.input[position] = name

    def drop_unused_initializers(self) -> None:
        used = {name for node in self.graph.node for name in node.input}
        kept = [i for i in self.graph.initializer if i.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept)


def _spread(array: np.ndarray, axis: int, positions: np.ndarray, size: int) -> np.ndarray:
    """`array` with its `axis` widened to `size`, its slices at `positions`, zeros elsewhere."""
    shape = list(array.shape)
    shape[axis] = size
    wide = np.zeros(shape, dtype=array.dtype)
    index = [slice(None)] * array.ndim
    index[axis] = positions
    wide[tuple(index)] = array
    return wide


def pad_channels(model: onnx.ModelProto, block: int = BLOCK) -> int:
    """Pad every convolution output that only feeds convolutions to a multiple of `block`
    channels, in place. Returns the number of convolutions padded."""
    graph = _Graph(model)
    # tensor -> (where its original channels sit, its padded channel count)
    layout: dict[str, tuple[np.ndarray, int]] = {}
    padded = 0
    for node in model.graph.node:
        if node.op_type in CHANNEL_CONSUMERS and node.input[1] in graph.arrays:
            if _attribute(node, "group", 1) != 1:
                continue
            in_axis, out_axis = _weight_axes(node)
            weight = graph.arrays[node.input[1]]
            changed = False
            if node.input[0] in layout:
                positions, size = layout[node.input[0]]
                weight = _spread(weight, in_axis, positions, size)
                changed = True
            count = weight.shape[out_axis]
            if count % block and graph.feeds_only_convolutions(node.output[0]):
                size = -(-count // block) * block
                weight = _spread(weight, out_axis, np.arange(count), size)
                if len(node.input) > 2 and node.input[2]:
                    bias = graph.arrays[node.input[2]]
                    graph.set_array(node, 2, _spread(bias, 0, np.arange(count), size))
                layout[node.output[0]] = (np.arange(count), size)
                changed = True
                padded += 1
            if changed:
                graph.set_array(node, 1, weight)
        elif node.op_type in CHANNEL_PRESERVING and node.input[0] in layout:
            layout[node.output[0]] = layout[node.input[0]]
        elif node.op_type == "Concat" and any(name in layout for name in node.input):
            parts, offset = [], 0
            for name in node.input:
                positions, size = layout.get(
                    name, (np.arange(graph.channels[name]), graph.channels[name])
                )
                parts.append(positions + offset)
                offset += size
            layout[node.output[0]] = (np.concatenate(parts), offset)
    graph.drop_unused_initializers()
    return padded


def softmax_as_elementwise(model: onnx.ModelProto) -> int:
    """Replace each Softmax by exp(x - max(x)) / sum(exp(x - max(x))) over its axis, in place.
    Returns the number replaced."""
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    replaced = 0
    for index in reversed(range(len(graph.node))):
        node = graph.node[index]
        if node.op_type != "Softmax":
            continue
        axis = _attribute(node, "axis", -1)
        source, result = node.input[0], node.output[0]
        stem = f"{node.name or result}__elementwise"
        axes = f"{stem}_axes"
        graph.initializer.append(numpy_helper.from_array(np.array([axis], np.int64), axes))
        # ReduceMax takes its axes as an attribute before opset 18, as an input from 18 on
        reduce_max = (
            helper.make_node("ReduceMax", [source, axes], [f"{stem}_max"], keepdims=1)
            if opset >= 18
            else helper.make_node("ReduceMax", [source], [f"{stem}_max"], axes=[axis], keepdims=1)
        )
        nodes = [
            reduce_max,
            helper.make_node("Sub", [source, f"{stem}_max"], [f"{stem}_shifted"]),
            helper.make_node("Exp", [f"{stem}_shifted"], [f"{stem}_exp"]),
            helper.make_node("ReduceSum", [f"{stem}_exp", axes], [f"{stem}_sum"], keepdims=1),
            helper.make_node("Div", [f"{stem}_exp", f"{stem}_sum"], [result]),
        ]
        for new in nodes:
            new.name = new.output[0] if new.output[0] != result else f"{stem}_div"
        del graph.node[index]
        for offset, new in enumerate(nodes):
            graph.node.insert(index + offset, new)
        replaced += 1
    return replaced


def cpu_layout(model: onnx.ModelProto) -> dict[str, int]:
    """Both rewrites, in place; what each changed."""
    return {
        "softmax_replaced": softmax_as_elementwise(model),
        "convolutions_padded": pad_channels(model),
    }
