"""Compute device choice: CUDA, else Apple MPS, else CPU for torch; MLX availability reported apart.

The probes are module-level functions so tests can fake availability with monkeypatch.
"""

from __future__ import annotations

import importlib.util
import platform
import sys
from dataclasses import asdict, dataclass

VALID_DEVICES = ("auto", "cpu", "cuda", "mps")


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def mps_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def is_apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


def mlx_available() -> bool:
    """True when `mlx` is importable (Apple Silicon; `mlx[cpu]` on Linux also counts)."""
    return importlib.util.find_spec("mlx") is not None


def mlx_vlm_available() -> bool:
    return importlib.util.find_spec("mlx_vlm") is not None


@dataclass(frozen=True)
class DeviceInfo:
    torch_device: str
    reason: str
    cuda: bool
    mps: bool
    mlx: bool
    mlx_vlm: bool
    apple_silicon: bool

    def to_dict(self) -> dict:
        return asdict(self)


def pick_device(preference: str = "auto") -> DeviceInfo:
    """Choose the torch device.

    Args:
        preference: "auto" (CUDA → MPS → CPU) or an explicit device. An explicit device that is not
            available falls back to CPU and says so in `reason`.

    Raises:
        ValueError: on an unknown device name.
    """
    preference = (preference or "auto").strip().lower()
    if preference not in VALID_DEVICES:
        raise ValueError(f"Unknown device {preference!r}; choose one of {', '.join(VALID_DEVICES)}.")
    cuda, mps = cuda_available(), mps_available()
    if preference == "auto":
        if cuda:
            device, reason = "cuda", "CUDA GPU found"
        elif mps:
            device, reason = "mps", "Apple Metal (MPS) found"
        else:
            device, reason = "cpu", "no GPU found"
    elif preference == "cuda" and not cuda:
        device, reason = "cpu", "CUDA requested but not available; using CPU"
    elif preference == "mps" and not mps:
        device, reason = "cpu", "MPS requested but not available; using CPU"
    else:
        device, reason = preference, f"{preference} set by MEDSIGHT_DEVICE"
    return DeviceInfo(
        torch_device=device,
        reason=reason,
        cuda=cuda,
        mps=mps,
        mlx=mlx_available(),
        mlx_vlm=mlx_vlm_available(),
        apple_silicon=is_apple_silicon(),
    )


def free_accelerator_memory() -> None:
    """Release cached GPU memory between pipeline stages (no-op on CPU)."""
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and mps_available() and hasattr(mps, "empty_cache"):
        mps.empty_cache()
