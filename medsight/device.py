"""Compute device choice: CUDA, else Apple MPS, else CPU for torch; MLX availability reported apart.

The probes are module-level functions so tests can fake availability with monkeypatch. `placements` says
which processor each model slot would use on a given platform (the System page shows it for this machine
and for a Mac with Apple Silicon), so the Apple branches are testable where they cannot run.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
import threading
from dataclasses import asdict, dataclass
from typing import Iterable, MutableMapping

# One copy of each model serves every page session and API call in the process. A forward hook (Grad-CAM,
# activation capture) on a shared module would also fire for another thread's forward pass, so image-model
# work runs one analysis or map at a time. Re-entrant: a map computed inside an analysis takes it again.
MODELS_IN_USE = threading.RLock()

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


def macos_version() -> tuple[int, int] | None:
    """(major, minor) of macOS, None elsewhere."""
    release = platform.mac_ver()[0] if sys.platform == "darwin" else ""
    parts = [int(p) for p in release.split(".")[:2] if p.isdigit()]
    return (parts[0], parts[1] if len(parts) > 1 else 0) if parts else None


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
    cuda, mps = cuda_available(), mps_available()
    device, reason = _choose(preference, cuda, mps)
    return DeviceInfo(
        torch_device=device,
        reason=reason,
        cuda=cuda,
        mps=mps,
        mlx=mlx_available(),
        mlx_vlm=mlx_vlm_available(),
        apple_silicon=is_apple_silicon(),
    )


def _choose(preference: str, cuda: bool, mps: bool) -> tuple[str, str]:
    preference = (preference or "auto").strip().lower()
    if preference not in VALID_DEVICES:
        raise ValueError(f"Unknown device {preference!r}; choose one of {', '.join(VALID_DEVICES)}.")
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
    return device, reason


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


# ----------------------------------------------------------------------------------------- Apple Silicon

MPS_FALLBACK_ENV = "PYTORCH_ENABLE_MPS_FALLBACK"


@dataclass(frozen=True)
class MPSFallback:
    """Whether torch operators that MPS lacks run on the CPU (True) or raise NotImplementedError (False)."""

    enabled: bool
    note: str


def enable_mps_fallback(environ: MutableMapping[str, str] | None = None, *, apple_silicon: bool | None = None,
                        torch_imported: bool | None = None) -> MPSFallback:
    """Set `PYTORCH_ENABLE_MPS_FALLBACK=1` on Apple Silicon unless the user chose otherwise.

    torch reads the variable once, when it loads its MPS kernels, so this must run before `import torch`
    (`medsight/__init__.py` calls it). Without it, an operator MPS lacks stops the analysis with an error.
    """
    environ = os.environ if environ is None else environ
    apple = is_apple_silicon() if apple_silicon is None else apple_silicon
    imported = ("torch" in sys.modules) if torch_imported is None else torch_imported
    if not apple:
        return MPSFallback(False, "not an Apple Silicon Mac: MPS is not used")
    value = environ.get(MPS_FALLBACK_ENV)
    if value is not None and value.strip() == "0":
        return MPSFallback(False, f"{MPS_FALLBACK_ENV}=0 set by the user: operators MPS lacks raise an error")
    if value is None:
        if imported:
            return MPSFallback(False, f"torch was imported before {MPS_FALLBACK_ENV} could be set: operators MPS "
                                      f"lacks raise an error (start the app with {MPS_FALLBACK_ENV}=1)")
        environ[MPS_FALLBACK_ENV] = "1"
    return MPSFallback(True, "operators MPS lacks run on the CPU (slower, but the analysis completes)")


# ---------------------------------------------------------------------------------- image-model runtime

RUNTIME_ENV = "MEDSIGHT_RUNTIME"

#: Whether an image model's forward pass runs in ONNX Runtime on the CPU when `MEDSIGHT_RUNTIME` is unset
#: ("auto"), decided by `make bench` on a quiet 2-core Xeon: the pathology network (DenseNet-121) is 2.4×
#: faster in ONNX Runtime and needs it for the 0.5× matmul target (0.67× against 0.32× eager), for about 30 MB;
#: the anomaly detector gained only 4 % on a full-size film's whole analysis (346 against 331 ms median,
#: batch 1) for 250 MB more memory, which took the all-models peak past its 2 GB target, so it stays in PyTorch.
ONNX_BY_DEFAULT = {"pathology.": True, "anomaly.": False}


def runtime_preference(environ: MutableMapping[str, str] | None = None) -> str:
    """`MEDSIGHT_RUNTIME`: "torch" (PyTorch for every image model), "onnx" (ONNX Runtime for every image model
    on the CPU) or "auto" (the default: ONNX Runtime where `ONNX_BY_DEFAULT` says it pays)."""
    value = (os.environ if environ is None else environ).get(RUNTIME_ENV, "").strip().lower()
    if value in ("torch", "pytorch"):
        return "torch"
    return "onnx" if value in ("onnx", "onnxruntime") else "auto"


def uses_onnx_runtime(slot: str, environ: MutableMapping[str, str] | None = None) -> bool:
    """Whether the image model in `slot` runs its forward pass in ONNX Runtime on the CPU, given the setting."""
    preference = runtime_preference(environ)
    if preference != "auto":
        return preference == "onnx"
    return next((default for prefix, default in ONNX_BY_DEFAULT.items() if slot.startswith(prefix)), False)


# ------------------------------------------------------------------------------------------ CPU threads

OMP_WAIT_POLICY_ENV = "OMP_WAIT_POLICY"


@dataclass(frozen=True)
class CPUThreadPolicy:
    """How torch's OpenMP threads wait between parallel regions, and why."""

    wait_policy: str
    note: str


def configure_cpu_threads(environ: MutableMapping[str, str] | None = None, *,
                          torch_imported: bool | None = None) -> CPUThreadPolicy:
    """Let torch's idle OpenMP threads sleep instead of spinning (`OMP_WAIT_POLICY=PASSIVE`).

    By default each OpenMP worker spins for a while after every parallel region. The app runs the image
    models from more than one thread (each Streamlit session, the HTTP API served in the same process),
    and every such thread gets its own team of spinning workers; on two cores that share their time with
    other work, spinning workers take the cores from the ones doing the analysis. Measured on a loaded
    2-core machine, a DenseNet-121 pass took a median 180–1,940 ms with spinning workers and 92–105 ms
    with sleeping ones (benchmarks/README.md). OpenMP reads the variable once, when torch loads, so this
    must run before `import torch` (`medsight/__init__.py` calls it); a value the user set is kept.
    """
    environ = os.environ if environ is None else environ
    imported = ("torch" in sys.modules) if torch_imported is None else torch_imported
    value = environ.get(OMP_WAIT_POLICY_ENV)
    if value is not None:
        return CPUThreadPolicy(value.strip().upper(), f"{OMP_WAIT_POLICY_ENV}={value} set by the user")
    if imported:
        return CPUThreadPolicy("ACTIVE", f"torch was imported before {OMP_WAIT_POLICY_ENV} could be set: idle "
                                         "OpenMP threads spin (start the app with OMP_WAIT_POLICY=PASSIVE)")
    environ[OMP_WAIT_POLICY_ENV] = "PASSIVE"
    return CPUThreadPolicy("PASSIVE", "idle OpenMP threads sleep, so analyses from several threads or a "
                                      "shared machine do not slow each other down")


def model_dtype(device: str, kind: str, macos: tuple[int, int] | None = None) -> str:
    """Weights dtype for a torch model on `device`.

    Args:
        device: "cpu", "cuda" or "mps".
        kind: "image" (classifiers, detectors, embedders) or "llm" (transformers language model).
        macos: macOS version (defaults to this machine's); MPS has bfloat16 only from macOS 14.

    Image models stay float32 everywhere: their thresholds were calibrated in float32. Language models use
    bfloat16 (half the memory, float32's range) where the device has it, float16 on MPS before macOS 14.
    MPS has no float64 at all, so nothing here ever asks for it.
    """
    if kind == "image":
        return "float32"
    if kind != "llm":
        raise ValueError(f"unknown model kind {kind!r}; use 'image' or 'llm'")
    if device == "mps":
        version = macos if macos is not None else macos_version()
        return "bfloat16" if version is None or version >= (14, 0) else "float16"
    return "bfloat16"


@dataclass(frozen=True)
class Platform:
    """What a machine offers, for `placements`. `Platform.this_machine()` probes; the constants describe others."""

    label: str
    apple_silicon: bool = False
    cuda: bool = False
    mps: bool = False
    mlx_vlm: bool = False
    macos: tuple[int, int] | None = None

    @classmethod
    def this_machine(cls) -> "Platform":
        system = "macOS" if sys.platform == "darwin" else platform.system()
        label = f"this machine ({system} {platform.machine()})"
        return cls(label, is_apple_silicon(), cuda_available(), mps_available(), mlx_vlm_available(), macos_version())


# A Mac with an M-series chip, macOS 14+, installed with requirements.txt (mlx and mlx-vlm come with it there).
APPLE_SILICON_MAC = Platform("Mac with Apple Silicon (macOS 14+)", apple_silicon=True, mps=True, mlx_vlm=True,
                             macos=(14, 0))


@dataclass(frozen=True)
class Placement:
    """Where one model slot runs on a platform."""

    slot: str
    processor: str
    framework: str
    dtype: str
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


_PROCESSOR = {"cuda": "NVIDIA GPU (CUDA)", "mps": "Apple GPU (MPS)", "cpu": "CPU"}

# Slot name (or prefix ending in ".") → how its model runs. Kept next to the device logic so the System page
# and the README table come from one place; a test checks every registered slot is covered.
SLOT_RUNTIMES = {
    "anomaly.": "onnx",
    "pathology.": "onnx",
    "retrieval.image_embedder": "torch",
    "retrieval.text_embedder": "sentence-transformers",
    "nlp.entities": "spacy",
    "nlp.conditions": "zero-shot",
    "llm.text": "llm",
    "voice.": "ctranslate2",
}


def _runtime(slot: str) -> str | None:
    for key, runtime in SLOT_RUNTIMES.items():
        if slot == key or (key.endswith(".") and slot.startswith(key)):
            return runtime
    return None


def placements(slots: Iterable[str], target: Platform | None = None, preference: str = "auto") -> list[Placement]:
    """Which processor, framework and dtype each slot would use on `target` (this machine by default)."""
    target = target or Platform.this_machine()
    device, _ = _choose(preference, target.cuda, target.mps)
    rows = []
    for slot in slots:
        runtime = _runtime(slot)
        if runtime in ("torch", "onnx"):
            note = "operators MPS lacks fall back to the CPU" if device == "mps" else ""
            framework = "PyTorch"
            if runtime == "onnx" and device == "cpu" and uses_onnx_runtime(slot):
                # The forward pass once exported and checked equal; Grad-CAM maps need PyTorch's gradients.
                framework = "ONNX Runtime (PyTorch for Grad-CAM)"
                note = f"PyTorch until the exported graph is ready, or with {RUNTIME_ENV}=torch"
            elif runtime == "onnx" and device == "cpu":
                note = f"ONNX Runtime with {RUNTIME_ENV}=onnx"
            rows.append(Placement(slot, _PROCESSOR[device], framework, model_dtype(device, "image"), note))
        elif runtime == "sentence-transformers":
            rows.append(Placement(slot, "CPU", "PyTorch (sentence-transformers)", "float32",
                                  "small encoder pinned to the CPU: same vectors as the stored case base"))
        elif runtime == "zero-shot":
            on_gpu = device == "cuda"
            rows.append(Placement(slot, _PROCESSOR["cuda" if on_gpu else "cpu"], "PyTorch (transformers pipeline)",
                                  "float32", "" if on_gpu else "the zero-shot pipeline uses a GPU only with CUDA"))
        elif runtime == "spacy":
            rows.append(Placement(slot, "CPU", "spaCy", "-", "rules and a small CPU pipeline"))
        elif runtime == "ctranslate2":
            on_gpu = device == "cuda"
            rows.append(Placement(slot, _PROCESSOR["cuda" if on_gpu else "cpu"], "CTranslate2 (faster-whisper)",
                                  "float16" if on_gpu else "int8",
                                  "" if on_gpu else "CTranslate2 has no Metal backend; int8 on the CPU"
                                  + (" (Apple Accelerate)" if target.apple_silicon else "")))
        elif runtime == "llm":
            fallback = (f"otherwise SmolLM2 / MEDSIGHT_LOCAL_LLM with transformers on {_PROCESSOR[device]}, "
                        f"{model_dtype(device, 'llm', target.macos)}")
            if target.mlx_vlm:
                # On Linux mlx[cpu] runs the same code on the CPU (used by the test suite).
                rows.append(Placement(slot, "Apple GPU (MLX)" if target.apple_silicon else "CPU (mlx[cpu])",
                                      "MLX (mlx-vlm)", "4-bit weights",
                                      "MedGemma 4B when its MLX build is present; " + fallback))
            else:
                rows.append(Placement(slot, _PROCESSOR[device], "PyTorch (transformers)",
                                      model_dtype(device, "llm", target.macos),
                                      "MedGemma via MLX needs Apple Silicon; " + fallback.removeprefix("otherwise ")))
        else:
            rows.append(Placement(slot, "-", "-", "-", "no placement rule for this slot"))
    return rows
