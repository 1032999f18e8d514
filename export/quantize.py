"""Weight quantization of an exported file, keeping its metadata.

    nbits    `com.microsoft.MatMulNBits`: weight-only blocks of `block` values (symmetric), 4 or 8 bits, with
             accuracy_level 4, so the CPU computes in int8 (AVX512-VNNI / AMX) instead of dequantizing every
             weight to fp32 at every step.
    dynamic  onnxruntime's dynamic int8 quantization (`DynamicQuantizeMatMul`: int8 weights, activations
             quantized on the fly per call).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from export.graph import quiet, serialize
from gpt.errors import GPTError
from gpt.fsutil import atomic_write_bytes


@dataclass(frozen=True)
class Quantization:
    name: str
    method: str  # "nbits" | "dynamic"
    bits: int = 8
    block: int = 32


# Each flag's default is what measured faster (2-core AMD EPYC, onnxruntime 1.32, decode tokens/s at batch 1 and
# 8, `shakespeare` and `cpu` shapes): 8-bit MatMulNBits was 0.7-0.8x dynamic int8, so `int8` is dynamic;
# 4-bit blocks of 32 beat 16 (2x) and matched 64/128 within noise.
SCHEMES = {
    "int8": Quantization("int8", "dynamic"),
    "int4": Quantization("int4", "nbits", bits=4, block=32),
    "int8-nbits": Quantization("int8-nbits", "nbits", bits=8, block=32),
}
BLOCKS = (16, 32, 64, 128)


def quantize(src: Path, dst: Path, scheme: Quantization) -> None:
    """Write `src` with its MatMul weights quantized by `scheme` to `dst` (atomically)."""
    import onnx

    if scheme.method not in ("nbits", "dynamic") or scheme.block not in BLOCKS:
        raise GPTError(f"unknown quantization {scheme}")
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp, quiet():
        if scheme.method == "dynamic":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            out = Path(tmp) / dst.name
            quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                             extra_options={"MatMulConstBOnly": True})
            proto = onnx.load(str(out))
        else:
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            q = MatMulNBitsQuantizer(onnx.load(str(src)), bits=scheme.bits, block_size=scheme.block,
                                     is_symmetric=True, accuracy_level=4)
            q.process()
            proto = q.model.model
    source = onnx.load(str(src), load_external_data=False)
    del proto.metadata_props[:]
    proto.metadata_props.extend(source.metadata_props)
    atomic_write_bytes(dst, serialize(proto))
