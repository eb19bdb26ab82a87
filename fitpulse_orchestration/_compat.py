"""Runtime capability flags.

GPU code paths (implicit's CUDA ALS, faiss-gpu) sit behind ``HAS_GPU``. CPU is the default and
what CI tests; ``FITPULSE_DISABLE_GPU=1`` forces the CPU path on a GPU machine.
"""

from __future__ import annotations

import os


def _detect_gpu() -> bool:
    if os.environ.get("FITPULSE_DISABLE_GPU") == "1":
        return False
    try:
        import implicit.gpu
    except ImportError:
        return False
    return bool(implicit.gpu.HAS_CUDA)


HAS_GPU: bool = _detect_gpu()
