"""Clean-ups of ORT's QDQ output for STNs (onnx only): keep the float region's tensors float.

ORT's quantiser inserts one Q/DQ pair per quantised tensor and hands every reader the DQ, even
readers it was told to leave alone; these passes give those readers the float tensor back.
"""

from __future__ import annotations

import onnx

_QDQ = ("QuantizeLinear", "DequantizeLinear")


def rewire_region_inputs(model: onnx.ModelProto, region_names: set[str]) -> int:
    """Region nodes that read ``DQ(Q(x))`` read ``x`` again when ``x`` is a graph input or a
    region node's output (elsewhere the quantiser may have folded a Relu into the Q: its
    input is then not the tensor the node used to read); drops Q/DQ left unused."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    floats = {i.name for i in graph.input}
    floats |= {o for n in graph.node if n.name in region_names for o in n.output}
    rewired = 0
    for n in graph.node:
        if n.name not in region_names:
            continue
        for i, name in enumerate(n.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear" or q.input[0] not in floats:
                continue  # a quantised weight, or an activation without its float original
            n.input[i] = q.input[0]
            rewired += 1
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if n.op_type in _QDQ and not set(n.output) & used]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return rewired


#: ops that read logits: a QDQ pair in front of them only rounds the scores (argmax ties)
_SCORE_OPS = ("Softmax", "LogSoftmax")


def float_outputs(model: onnx.ModelProto, region_names: set[str]) -> list[str]:
    """Graph outputs the quantiser put behind a Q/DQ pair although a float-region node makes
    them (e.g. ``--expose-stn``'s rectified image, also read by the quantised classifier) are
    the float tensor again; the quantised consumers keep reading the DQ. Returns the names."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    fixed = []
    for out in graph.output:
        dq = producer.get(out.name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        src = producer.get(q.input[0])
        if src is None or src.name not in region_names:
            continue
        y, t, deq = out.name, q.input[0], out.name + "_DequantizeLinear_Output"
        for n in graph.node:  # the DQ's readers move to a new name ...
            for k, name in enumerate(n.input):
                if name == y:
                    n.input[k] = deq
        dq.output[0] = deq
        for n in (src, q):  # ... and the float tensor takes the output's name
            for seq in (n.input, n.output):
                for k, name in enumerate(seq):
                    if name == t:
                        seq[k] = y
        fixed.append(y)
    return fixed


def float_scores(model: onnx.ModelProto) -> list[str]:
    """Drop the Q/DQ pair on tensors read only by Softmax/LogSoftmax or graph outputs (the
    classifier's logits): 256 levels over the logits' range make near-ties equal and move
    the argmax, and ORT still fuses the Gemm (QGemm with a float output). Returns the tensors."""
    graph = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    kept = []
    for q in [n for n in graph.node if n.op_type == "QuantizeLinear"]:
        dqs = consumers.get(q.output[0], [])
        if len(dqs) != 1 or dqs[0].op_type != "DequantizeLinear" or q.output[0] in outputs:
            continue
        dq = dqs[0]
        readers = consumers.get(dq.output[0], [])
        if dq.output[0] in outputs or not readers:
            continue
        if not all(r.op_type in _SCORE_OPS for r in readers):
            continue
        for r in readers:
            for k, name in enumerate(r.input):
                if name == dq.output[0]:
                    r.input[k] = q.input[0]
        graph.node.remove(q)
        graph.node.remove(dq)
        kept.append(q.input[0])
    return kept
