"""The sampler inside the graph: `_sample_plain_row`'s float64 arithmetic as onnxruntime ops after the logits, so a
decode step's run call returns the next token itself. Torch-free, and free of the `onnx` package too.

Why: at batch 1 on the `cpu` shape a step's onnxruntime run is ~95 % of onnxruntime-genai's whole step, and what
made ours slower was the Python around it: a dozen numpy calls to sample 65 numbers cost more than the arithmetic.
In the graph the same arithmetic costs a microsecond a node (bench.step_cost shows it).

How, without rewriting the file: a serialized protobuf message followed by another parses as their merge (a
repeated field appends, an embedded message merges), so the file's bytes followed by a ModelProto whose graph
holds only the head's nodes, inputs, outputs and constants *is* the model with the head appended.
onnxruntime-genai, the web page and every other reader of the file never see it.

The head, at every position of every row (a row's temperature > 0, a position's uniform draw u in [0, 1); no
top-k, no top-p): a decode step's one token, or a speculative verify run's token after each drafted one:

    x = float64(logits) - max;  x /= temperature;  p = exp(x) / sum(exp(x));  cdf = cumsum(p)
    token = count(cdf[:-1] <= u * cdf[-1])        (= min(searchsorted(cdf, u * cdf[-1], "right"), V - 1))

The same operations in the same order as numpy's; onnxruntime's exp and sum may round a last bit differently
from numpy's, so a draw within ~1e-16 of the boundary between two characters can land on the neighbour: seen only
for a draw of 1 - 2**-53 among characters of probability ~1e-20 (tests/test_sampler_graph.py compares thousands
of ordinary draws, on every layout: all the same).
"""

from __future__ import annotations

import struct

import numpy as np

TEMPERATURE = "sample_temperature"  # input [B, 1, 1] float64: a row's temperature (> 0)
UNIFORM = "sample_uniform"  # input [B, T, 1] float64 (or [B, 1, 1], one draw for every position): the draws
TOKENS = "sampled_ids"  # output [B, T] int64: the token sampled after each position
LOGITS = "logits"  # the graph output the head reads: [B, T, V] float32

_INT64, _DOUBLE = 7, 11  # onnx TensorProto.DataType
_INT = 2  # onnx AttributeProto.AttributeType


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64s are 10-byte two's complement
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: bytes | str | int) -> bytes:
    """One protobuf field: an int as a varint, bytes/str/a message as length-delimited."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _node(op: str, inputs: list[str], output: str, **ints: int) -> bytes:
    attributes = b"".join(_field(5, _field(1, k) + _field(20, _INT) + _field(3, v)) for k, v in ints.items())
    return b"".join(_field(1, i) for i in inputs) + _field(2, output) + _field(3, f"sampler/{output}") \
        + _field(4, op) + attributes


def _value_info(name: str, elem_type: int, dims: list[str | int]) -> bytes:
    shape = b"".join(_field(1, _field(2, d) if isinstance(d, str) else _field(1, d)) for d in dims)
    return _field(1, name) + _field(2, _field(1, _field(1, elem_type) + _field(2, shape)))


def _int64s(name: str, values: list[int]) -> bytes:
    return _field(1, len(values)) + _field(2, _INT64) + _field(8, name) \
        + _field(9, struct.pack(f"<{len(values)}q", *values))


def head() -> bytes:
    """A ModelProto holding only the head's graph part, to append to a file's bytes."""
    s = "sampler/"
    nodes = [
        _node("Cast", [LOGITS], s + "row", to=_DOUBLE),
        _node("ReduceMax", [s + "row", s + "axis"], s + "max", keepdims=1),
        _node("Sub", [s + "row", s + "max"], s + "shifted"),
        _node("Div", [s + "shifted", TEMPERATURE], s + "scaled"),
        _node("Exp", [s + "scaled"], s + "exp"),
        _node("ReduceSum", [s + "exp", s + "axis"], s + "sum", keepdims=1),
        _node("Div", [s + "exp", s + "sum"], s + "p"),
        _node("CumSum", [s + "p", s + "axis_scalar"], s + "cdf"),
        _node("Slice", [s + "cdf", s + "minus1", s + "end", s + "axis"], s + "total"),
        _node("Mul", [UNIFORM, s + "total"], s + "u_total"),
        _node("Slice", [s + "cdf", s + "zero", s + "minus1", s + "axis"], s + "cdf_but_last"),
        _node("LessOrEqual", [s + "cdf_but_last", s + "u_total"], s + "below"),
        _node("Cast", [s + "below"], s + "below_int", to=_INT64),
        _node("ReduceSum", [s + "below_int", s + "axis"], TOKENS, keepdims=0),
    ]
    scalar_axis = _field(2, _INT64) + _field(8, s + "axis_scalar") + _field(9, struct.pack("<q", -1))  # dims: none
    constants = [scalar_axis, _int64s(s + "axis", [-1]), _int64s(s + "minus1", [-1]), _int64s(s + "zero", [0]),
                 _int64s(s + "end", [np.iinfo(np.int64).max])]
    graph = b"".join(_field(1, n) for n in nodes) + b"".join(_field(5, c) for c in constants) \
        + _field(11, _value_info(TEMPERATURE, _DOUBLE, ["batch_size", 1, 1])) \
        + _field(11, _value_info(UNIFORM, _DOUBLE, ["batch_size", "draws", 1])) \
        + _field(12, _value_info(TOKENS, _INT64, ["batch_size", "sequence_length"]))
    return _field(7, graph)


def with_head(model: bytes) -> bytes:
    """The file's bytes with the sampling head appended (see the module's docstring)."""
    return model + head()
