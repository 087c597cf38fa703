"""Fused ONNX graphs for the student: ONNX Runtime's transformer optimizer, made to match.

`onnxruntime.transformers.optimizer` rewrites a BERT-style graph into a few large kernels:
`Attention` (Q, K and V in one GEMM, then the masked softmax), `SkipLayerNormalization`
(residual add + LayerNorm) and `BiasGelu`. Quantized afterwards, `Attention` becomes
`QAttention`. Its patterns are written for the classic export of BERT, and the graph that
`torch.onnx.export(dynamo=True)` writes for a transformers 5 model misses two of them:

* transformers 5 builds the attention mask with vectorised index arithmetic (Range, GatherND,
  And, Where), where the optimizer looks for the additive mask `(1 - mask) * min`, broadcast
  with two Unsqueeze nodes. The student is therefore exported for fusion with eager attention
  and that additive mask computed by the wrapper (`AdditiveMask`); transformers passes a 4D
  mask through unchanged.
* the exporter folds those two Unsqueeze nodes into one, and eager attention scales the scores
  with a Mul, which the optimizer's mask search takes for the mask's own Mul. `canonical`
  writes the Unsqueeze back as two nodes and the scale as a Div by its inverse (the same
  number up to float rounding: the fp32 check against PyTorch still applies).

The fused graph is checked like any other export (`sead.export`): its logits against PyTorch's
within `export.atol`, its int8 twin's metric within `export.max_metric_drop`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

FUSED_OPS = ("Attention", "SkipLayerNormalization", "BiasGelu", "EmbedLayerNormalization")


class AdditiveMask(torch.nn.Module):
    """The model with the classic additive attention mask, built from the 2D padding mask:
    0 where a token is attended to, the most negative float where it is padding."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        mask = attention_mask.unsqueeze(1).unsqueeze(2).to(torch.float32)
        mask = (1.0 - mask) * torch.finfo(torch.float32).min
        inputs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=mask, **inputs).logits


def canonical(model_proto):
    """The exported graph with the two spellings the optimizer expects (module docstring):
    the padding mask's double Unsqueeze, and the attention scale as a Div. In place."""
    from onnx import helper, numpy_helper

    graph = model_proto.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)

    def scalar(name: str):
        value = constants.get(name)
        return value if value is not None and value.size == 1 else None

    nodes = []
    for node in graph.node:
        axes = constants.get(node.input[1]) if node.op_type == "Unsqueeze" else None
        if node.input[0] == "attention_mask" and axes is not None and axes.size == 2:
            first, second = (f"{node.name}_axis_{i}" for i in (0, 1))
            graph.initializer.extend(
                numpy_helper.from_array(np.asarray([axis], np.int64), name)
                for axis, name in zip(axes.tolist(), (first, second), strict=True)
            )
            middle, name = f"{node.output[0]}_first", node.name
            nodes += [
                helper.make_node("Unsqueeze", [node.input[0], first], [middle], f"{name}_a"),
                helper.make_node("Unsqueeze", [middle, second], list(node.output), f"{name}_b"),
            ]
            continue
        scale = scalar(node.input[1]) if node.op_type == "Mul" and len(node.input) == 2 else None
        source = producer.get(node.input[0])
        followers = users.get(node.output[0], [])
        if (
            scale is not None
            and source is not None
            and source.op_type == "MatMul"
            and [f.op_type for f in followers] == ["Add"]
        ):
            inverse = f"{node.input[1]}_inverse"
            if inverse not in constants:
                constants[inverse] = (1.0 / scale).astype(scale.dtype)
                graph.initializer.append(numpy_helper.from_array(constants[inverse], inverse))
            nodes.append(
                helper.make_node("Div", [node.input[0], inverse], list(node.output), node.name)
            )
            continue
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model_proto


# Encoders whose 4D attention mask is additive, as `AdditiveMask` feeds it (fusion checked on
# each in sead's review: all layers fused, or some with a warning, logits equal). Others, such
# as DeBERTa (which reads a 4D mask as keep/drop), export unfused.
FUSABLE_TYPES = frozenset(
    {"bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert", "mpnet", "albert"}
)


def fuse(source: Path, target: Path, config) -> dict[str, int]:
    """`target`: ONNX Runtime's transformer optimizer over `source` (exported from
    `AdditiveMask`), after `canonical`. Returns how many of each fused kernel it made."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    canonical_file = target.with_name(target.stem + ".canonical.onnx")
    onnx.save(canonical(onnx.load(str(source))), str(canonical_file))
    try:
        # opt_level 0: the optimizer's own pattern fusions only, no hardware-specific rewrites
        # (the session applies those when it loads the file)
        optimized = optimize_model(
            str(canonical_file),
            model_type="bert",
            num_heads=int(config.num_attention_heads),
            hidden_size=int(config.hidden_size),
            opt_level=0,
        )
        optimized.save_model_to_file(str(target))
    finally:
        canonical_file.unlink(missing_ok=True)
    counts = optimized.get_fused_operator_statistics()
    fused = {op: int(counts.get(op, 0)) for op in FUSED_OPS}
    layers = int(getattr(config, "num_hidden_layers", 0))
    if fused["Attention"] != layers:
        log.warning(
            "ONNX fusion: %d of %d attention layers fused (%s); the rest run unfused.",
            fused["Attention"],
            layers,
            ", ".join(f"{op} {n}" for op, n in fused.items()),
        )
    return fused
