"""PyTorch 2 Export (PT2E) quantization: read the codes out of a converted graph.

PT2E is the static-quantization path that PyTorch points to now that the eager
and FX ``torch.ao.quantization`` APIs are being deleted. It lives in torchao
(``torchao.quantization.pt2e``):

1. ``torch.export.export(model, (x,))`` captures the model as an ATen graph;
2. ``prepare_pt2e(graph, quantizer)`` inserts observers where a backend's
   *quantizer* says (``X86InductorQuantizer`` for x86 CPUs: uint8 activations
   per tensor, int8 weights per output channel);
3. running calibration batches through it records the ranges;
4. ``convert_pt2e`` replaces each observer by a ``quantize`` / ``dequantize``
   pair of ``quantized_decomposed`` ops: a *reference* graph, float ops between
   Q/DQ pairs, that computes what the integer model will compute;
5. ``torch.compile`` (Inductor) fuses each DQ -> op -> Q pattern into an int8 kernel.

:func:`pt2e_layers` reads, per conv or linear layer of a step-4 graph, the
qparams of its input and the int8 weight codes with their per-channel scales;
:func:`pt2e_activation_codes` runs the graph and returns, per layer, the float
input and the codes its ``quantize_per_tensor`` node made of it. The notebook
checks both against :func:`~linquant_helpers.affine.choose_qparams` and
:func:`~linquant_helpers.affine.quantize`.

torchao is imported by the notebook, not here: these functions only walk an
``torch.fx.GraphModule``.
"""

from __future__ import annotations

from typing import Any

import torch

TORCH_AO_REPLACEMENTS = (
    (
        "torch.quantize_per_tensor / quantize_per_channel, .int_repr() (03, 04, 07)",
        "torchao.quantization.quant_primitives.quantize_affine / dequantize_affine "
        "(plain integer tensors; block_size sets the granularity)",
    ),
    (
        "torch.fake_quantize_per_tensor_affine (03, 07)",
        "torchao.quantization.qat: QATConfig with IntxFakeQuantizeConfig; or prepare_qat_pt2e",
    ),
    (
        "torch.ao.quantization.MinMaxObserver, MovingAverageMinMaxObserver (03, 05)",
        "torchao.quantization.pt2e.observer.MinMaxObserver, MovingAverageMinMaxObserver: "
        "the same observers, named in a quantizer's QuantizationSpec",
    ),
    (
        "torch.ao.quantization.quantize_dynamic, default_dynamic_qconfig (10)",
        "torchao.quantization.quantize_(model, Int8DynamicActivationInt8WeightConfig())",
    ),
    (
        "eager static quantization: prepare / convert with QuantStub (05 did it by hand)",
        "torch.export + torchao.quantization.pt2e.quantize_pt2e.prepare_pt2e / convert_pt2e "
        "with a backend quantizer (X86InductorQuantizer), then torch.compile",
    ),
)
"""``(what the course uses from torch.ao or quantized tensors (lessons), what replaces it)``."""

_LAYER_OPS = ("aten.conv2d.default", "aten.linear.default", "aten.conv1d.default")


def _op_name(node: torch.fx.Node) -> str:
    return str(node.target) if node.op == "call_function" else ""


def _layer_name(node: torch.fx.Node) -> str:
    """The module path of the layer that ``node`` computes (``"features.0.0"``)."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return node.name
    return list(stack.values())[-1][0]


def _input_quantize(layer: torch.fx.Node, graph: torch.fx.GraphModule) -> torch.fx.Node:
    """The ``quantize_per_tensor`` node whose codes the layer's input dequantizes."""
    dq = layer.args[0]
    if not (isinstance(dq, torch.fx.Node) and "dequantize_per_tensor" in _op_name(dq)):
        raise ValueError(
            f"graph: the input of {layer.name} is not a dequantize_per_tensor node; "
            "pass the graph that convert_pt2e returned"
        )
    return dq.args[0]


def pt2e_layers(graph: torch.fx.GraphModule) -> dict[str, dict[str, Any]]:
    """Per conv or linear layer of a ``convert_pt2e`` graph, its input's and weight's qparams.

    Returns ``{layer: {"input": (scale, zero_point, quant_min, quant_max),
    "weight": (codes, scale, zero_point, axis)}}`` in graph order, where the
    layer is the module path (``"features.0.0"``). The input's ``scale`` is a
    float and ``zero_point`` an int, as the ``quantize_per_tensor`` node holds
    them; the weight's ``codes`` are the int8 tensor that ``convert_pt2e``
    folded, ``scale`` and ``zero_point`` one per channel along ``axis``, so that
    ``w_hat = scale * (codes - zero_point)``.
    Raises ``ValueError`` when a layer's input or weight is not quantized.
    """
    if not isinstance(graph, torch.fx.GraphModule):
        raise TypeError(f"graph must be a torch.fx.GraphModule, got {type(graph).__name__}")
    layers: dict[str, dict[str, Any]] = {}
    for node in graph.graph.nodes:
        if _op_name(node) not in _LAYER_OPS:
            continue
        q = _input_quantize(node, graph)
        dq_w = node.args[1]
        if not (isinstance(dq_w, torch.fx.Node) and "dequantize_per_channel" in _op_name(dq_w)):
            raise ValueError(f"graph: the weight of {node.name} is not dequantized per channel")
        codes, scale, zero_point = (getattr(graph, n.target) for n in dq_w.args[:3])
        layers[_layer_name(node)] = {
            "input": (float(q.args[1]), int(q.args[2]), int(q.args[3]), int(q.args[4])),
            "weight": (codes, scale, zero_point, int(dq_w.args[3])),
        }
    return layers


def pt2e_activation_codes(
    graph: torch.fx.GraphModule, x: torch.Tensor
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Run ``graph`` on ``x``; per conv or linear layer, ``(input, codes)`` of its input's Q node.

    ``input`` is the float tensor that the layer's ``quantize_per_tensor`` node
    received, ``codes`` what it returned (uint8 for ``X86InductorQuantizer``).
    Keys as :func:`pt2e_layers`.
    """
    if not isinstance(graph, torch.fx.GraphModule):
        raise TypeError(f"graph must be a torch.fx.GraphModule, got {type(graph).__name__}")
    wanted = {
        _input_quantize(node, graph): _layer_name(node)
        for node in graph.graph.nodes
        if _op_name(node) in _LAYER_OPS
    }
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            out = super().run_node(n)
            if n in wanted:
                seen[wanted[n]] = (self.env[n.args[0]], out)
            return out

    with torch.no_grad():
        Recorder(graph).run(x)
    return seen
