"""Mixed precision: ``train.precision`` (fp32 | bf16 | fp16) through ``torch.autocast``.

The training step runs the encoders, adapter, decoders, CLUB nets and Cross-CPC networks under
autocast (matmuls and convolutions in bf16 or fp16 on CPU and CUDA); the parts that must stay
exact run in float32 whatever the setting: the codebook (distances, assignments, commitment,
CMCM, the EMA statistics), the loss reductions (:func:`f32` before each one), the CLUB bound's
arithmetic and the Cross-CPC scores. fp16 needs a gradient scaler (``torch.amp.GradScaler``,
created by the trainer); bf16 has float32's exponent range and needs none. On the CPU, oneDNN has
no fp16 LSTM, so Cross-CPC's LSTMs run in float32 there under fp16.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor

__all__ = ["DTYPES", "autocast", "f32", "full_precision", "lstm_needs_fp32"]

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device_type: str, precision: str) -> AbstractContextManager:
    """Autocast to ``precision`` on ``device_type`` ("cpu" or "cuda"); a no-op for fp32."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type, dtype=DTYPES[precision])


def full_precision(device_type: str) -> AbstractContextManager:
    """Autocast off inside (for the parts computed in float32)."""
    return torch.autocast(device_type, enabled=False)


def f32(x: Tensor) -> Tensor:
    """``x`` in float32 if it is in a reduced precision (float64 stays float64)."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def lstm_needs_fp32(device_type: str) -> bool:
    """Whether the active autocast would run an LSTM in fp16 on the CPU (unsupported there)."""
    return (
        device_type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.float16
    )
