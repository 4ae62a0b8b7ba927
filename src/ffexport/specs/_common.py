"""Gates and preprocessing shared by several module kinds."""

from __future__ import annotations

from .base import Preprocess, gates

RGB_01 = Preprocess("RGB", (0.0, 0.0, 0.0), (255.0, 255.0, 255.0))          # [0, 1]
RGB_PM1 = Preprocess("RGB", (127.5, 127.5, 127.5), (127.5, 127.5, 127.5))     # [-1, 1]

# Image outputs: PSNR in dB on the output's value range mapped to [0, 1], and mean SSIM.
IMAGE_GATES = {
    "fp32": gates(("psnr_db", ">=", 60.0), ("ssim", ">=", 0.999)),
    "fp16": gates(("psnr_db", ">=", 40.0), ("ssim", ">=", 0.99)),
    "int8": gates(("psnr_db", ">=", 30.0), ("ssim", ">=", 0.95)),
}

# Raw-tensor fallbacks (relative L2 error ||a - b|| / ||b|| over every output).
RAW_FALLBACK = {
    "fp32": gates(("rel_err", "<=", 1e-4),),
    "fp16": gates(("rel_err", "<=", 1e-2),),
    "int8": gates(("rel_err", "<=", 0.1),),
}

# Ops whose FP16 versions are known to be fragile; parity then decides the rest.
FP16_BLOCK_DEFAULT = ("InstanceNormalization", "Resize", "ReduceMean", "ReduceSum", "ReduceL2",
                      "Softmax", "Pow", "Exp", "Sqrt", "ReduceSumSquare", "LayerNormalization")
