"""ONNX Runtime fp32 for the forward passes of the image networks on the CPU; PyTorch for everything else.

Which network runs here by default is decided by `make bench` (`medsight.device.ONNX_BY_DEFAULT`): the
pathology network (DenseNet-121 2.4x faster, about 30 MB more) does; the anomaly detector (4 % faster on a
full-size film's whole analysis, about 250 MB more) stays in PyTorch unless ``MEDSIGHT_RUNTIME=onnx``.
Gradients (the Grad-CAM maps drawn on demand) still need PyTorch, so the PyTorch networks stay loaded and every
model keeps its PyTorch path; ONNX Runtime takes over only the forward pass whose outputs the analysis reads
(scores and the activations the key maps are drawn from).

How a model gets there (`OnnxForward.start`, called by the registry after loading):
1. a copy of the model's forward graph (`build`) is exported with `torch.onnx.export` (TorchScript exporter,
   opset 17) into the user's model cache, ``<home>/models/cache/onnx/<name>-<key>.onnx``; the key hashes the
   weights, the constants baked into the graph and the torch, onnx and onnxruntime versions, so each set of
   weights is exported once (3-6 s on two cores) and later loads only open the file; the graph exported for
   replaced weights is deleted;
2. the session's outputs on one known input (a generated phantom) must equal PyTorch's within
   `SCORE_TOLERANCE` on scores and `MAP_TOLERANCE` on activations;
3. only then does `run` answer; until then, and for good after any failure (onnx not installed, export
   error, parity failure), it returns None and the model runs in PyTorch. `status` says which and why.

This runs in a background thread, so the first analysis after loading never waits for the export.
ONNX Runtime is used on the CPU only (a CUDA or MPS device keeps PyTorch), and not at all with
``MEDSIGHT_RUNTIME=torch``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from medsight.device import MODELS_IN_USE, OMP_WAIT_POLICY_ENV, RUNTIME_ENV, runtime_preference, uses_onnx_runtime

if TYPE_CHECKING:  # torch is imported where it is used, so importing this module stays light
    import torch

log = logging.getLogger(__name__)

ONNX_RUNTIME = "ONNX Runtime fp32"
TORCH_RUNTIME = "PyTorch fp32 eager"
OPSET = 17
#: Largest difference from PyTorch allowed on a score (values at most 1 in size; relative above that).
SCORE_TOLERANCE = 1e-5
#: Largest difference from PyTorch allowed on activations the maps are drawn from (relative to their peak).
MAP_TOLERANCE = 1e-4
#: Bumped whenever what a model exports changes, so older cached files are not reused.
GRAPH_VERSION = 1

PENDING, READY, TORCH = "preparing", "ready", "torch"

# torch.onnx.export keeps process-wide state while it runs: two models exporting at once would collide.
_EXPORT_LOCK = threading.Lock()


def cache_dir(settings: Any) -> Path:
    """Where exported graphs are kept: the user's model cache, never the repository."""
    return Path(settings.models_dir) / "cache" / "onnx"


def library_versions() -> str:
    """torch, onnx and onnxruntime versions, part of every cache key."""
    import torch

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "absent"

    return f"torch {torch.__version__}, onnx {version('onnx')}, onnxruntime {version('onnxruntime')}"


def check_image() -> np.ndarray:
    """The known input of every parity check: a generated phantom with an effusion (256×256, [0, 1])."""
    from medsight.synthetic import generate_phantom

    return generate_phantom(7, size=256, findings=("effusion",)).image


def export_onnx(graph: torch.nn.Module, example: torch.Tensor, path: Path, output_names: Sequence[str]) -> None:
    """Export `graph` (input "x", batch size free) to `path` with the TorchScript exporter, opset 17."""
    import torch

    with torch.no_grad():
        torch.onnx.export(graph, (example,), str(path), input_names=["x"], output_names=list(output_names),
                          dynamic_axes={"x": {0: "batch"}, **{name: {0: "batch"} for name in output_names}},
                          opset_version=OPSET, dynamo=False)


def _forget_older_graphs(current: Path) -> None:
    """Delete this model's graphs exported for other weights or library versions (tens of MB each)."""
    prefix = current.name.rsplit("-", 1)[0] + "-"
    for old in current.parent.glob(f"{prefix}*.onnx"):
        if old != current and old.name.rsplit("-", 1)[0] + "-" == prefix:
            old.unlink(missing_ok=True)


def return_freed_memory() -> None:
    """Give memory freed by Python back to the system (glibc keeps freed heap for reuse otherwise)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass


def session_options() -> Any:
    """Intra-op threads as torch's, one graph node at a time, idle threads asleep when OpenMP's are, no
    memory arena (it kept ~15-35 MB more per session and was not faster here) and no second, pre-packed copy
    of the weights (34 MB less for VGG16, the same speed: 91 ms either way)."""
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = False
    options.add_session_config_entry("session.disable_prepacking", "1")
    if os.environ.get(OMP_WAIT_POLICY_ENV, "").upper() == "PASSIVE":
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def parity_problems(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                    tolerances: Mapping[str, float]) -> list[str]:
    """The measures where `candidate` differs from `reference` by more than their tolerance (scaled by the
    reference's largest magnitude when it exceeds 1)."""
    problems = []
    for name, tolerance in tolerances.items():
        ref, got = np.asarray(reference[name], np.float64), np.asarray(candidate[name], np.float64)
        if ref.shape != got.shape:
            problems.append(f"{name}: shape {got.shape} instead of {ref.shape}")
            continue
        limit = tolerance * max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)
        worst = float(np.max(np.abs(ref - got))) if ref.size else 0.0
        if not np.isfinite(worst) or worst > limit:
            problems.append(f"{name}: differs by {worst:.3g} (allowed {limit:.3g})")
    return problems


@dataclass(frozen=True)
class GraphSpec:
    """What one model exports and how its parity is judged.

    Attributes:
        name: file-name prefix of the cached graph ("anomaly-detector", "pathology-classifier").
        build: `build(copy)` returns the forward graph (a module returning the outputs in `output_names` order)
            over the model's own networks, or with `copy=True` over a copy of them: the export traces a copy,
            so the background thread never traces the networks an analysis is running.
        example: returns the known input (a preprocessed phantom) the parity check runs on.
        output_names: the graph's outputs.
        measures: turns the outputs (name → array) into what the reader sees (name → array), compared with
            `tolerances` (name → tolerance).
        constants: text of the values baked into the graph besides its weights (calibration), for the key.
        slot: the registry slot of the model, for whether it runs ONNX Runtime by default.
    """

    name: str
    build: Callable[[bool], torch.nn.Module]
    example: Callable[[], torch.Tensor]
    output_names: tuple[str, ...]
    measures: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
    tolerances: Mapping[str, float]
    constants: str = ""
    slot: str = ""


class OnnxForward:
    """A model's forward graph in ONNX Runtime, used only once exported and proven equal to PyTorch.

    `run` returns the outputs (name → CPU tensor) when the session is ready and None otherwise, in which
    case the caller runs its PyTorch path. `runtime` names the path `run` would take now.
    """

    def __init__(self, spec: GraphSpec, folder: Path) -> None:
        self.spec, self.folder = spec, Path(folder)
        self.state, self.reason = PENDING, "ONNX Runtime session being prepared"
        self.path: Path | None = None
        self.exported = False
        self.export_seconds = 0.0
        self.prepare_seconds = 0.0
        self._session: Any = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def start(cls, spec: GraphSpec, folder: Path, device: str, *, background: bool = True) -> "OnnxForward":
        """Begin preparing the session (in a background thread unless `background` is False).

        Stays on PyTorch at once when `MEDSIGHT_RUNTIME=torch` is set, when the model's slot runs PyTorch by
        default (`medsight.device.ONNX_BY_DEFAULT`) and `MEDSIGHT_RUNTIME=onnx` is not set, or when the model is
        not on the CPU.
        """
        import torch

        forward = cls(spec, folder)
        if runtime_preference() == "torch":
            return forward.fall_back(f"{RUNTIME_ENV}=torch is set")
        if not uses_onnx_runtime(spec.slot):
            return forward.fall_back(f"PyTorch by default for this model, measured barely faster in ONNX Runtime "
                                     f"with far more memory; {RUNTIME_ENV}=onnx uses it")
        if torch.device(device).type != "cpu":
            return forward.fall_back(f"ONNX Runtime is used on the CPU only; this model runs on {device}")
        if background:
            forward._thread = threading.Thread(target=forward.prepare, name=f"onnx-{spec.name}", daemon=True)
            forward._thread.start()
        else:
            forward.prepare()
        return forward

    def __deepcopy__(self, memo: dict) -> "OnnxForward":
        # A handle on a session, not data: copies of a result or model share it (a session cannot be copied).
        return self

    def __getstate__(self) -> dict:
        # Another process gets the model on its PyTorch path (the session and thread stay here).
        state = {**self.__dict__, "_session": None, "_thread": None, "_done": None}
        if state["state"] == READY:
            state["state"], state["reason"] = TORCH, "copied into another process"
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._done = threading.Event()
        self._done.set()

    @property
    def ready(self) -> bool:
        return self.state == READY

    @property
    def runtime(self) -> str:
        """"ONNX Runtime fp32" once the session is ready, else "PyTorch fp32 eager"."""
        return ONNX_RUNTIME if self.ready else TORCH_RUNTIME

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until preparation has ended (ready or fallen back); True when it has."""
        return self._done.wait(timeout)

    def fall_back(self, reason: str) -> "OnnxForward":
        """Stay on PyTorch for good, saying why."""
        self._session, self.state, self.reason = None, TORCH, reason
        self._done.set()
        return self

    def status(self) -> dict[str, Any]:
        """Runtime, state and reason, the cached file and the time preparation took (for the System page)."""
        return {"runtime": self.runtime, "state": self.state, "reason": self.reason,
                "file": str(self.path) if self.path else "", "exported_now": self.exported,
                "export_seconds": round(self.export_seconds, 2), "prepare_seconds": round(self.prepare_seconds, 2)}

    def prepare(self) -> None:
        """Export (or reuse the cached graph), open the session, check parity; fall back on any failure."""
        start = time.perf_counter()
        try:
            self._prepare()
        except Exception as exc:  # noqa: BLE001 - any failure leaves the model on its PyTorch path
            log.warning("ONNX Runtime not used for %s: %s: %s", self.spec.name, type(exc).__name__, exc)
            self.fall_back(f"{type(exc).__name__}: {exc}")
        finally:
            self.prepare_seconds = time.perf_counter() - start
            self._done.set()

    def _prepare(self) -> None:
        import onnxruntime as ort
        import torch

        from medsight.models.anomaly.torch_model import state_dict_sha256

        spec = self.spec
        graph = spec.build(False)  # read only here: hashed, and run once under the models' lock below
        example = spec.example()
        key = state_dict_sha256(graph) + f"|{spec.constants}|{library_versions()}|opset {OPSET}|v{GRAPH_VERSION}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        path = self.folder / f"{spec.name}-{digest}.onnx"
        if not path.is_file():
            self.folder.mkdir(parents=True, exist_ok=True)
            began = time.perf_counter()
            handle, partial = tempfile.mkstemp(prefix=path.stem, suffix=".part", dir=self.folder)
            os.close(handle)
            try:
                with _EXPORT_LOCK:
                    export_onnx(spec.build(True), example, Path(partial), spec.output_names)
                os.replace(partial, path)  # atomic: another process never opens a half-written file
            finally:
                Path(partial).unlink(missing_ok=True)
            self.exported, self.export_seconds = True, time.perf_counter() - began
            _forget_older_graphs(path)
            return_freed_memory()  # the export's copy of the networks and its trace: ~120 MB kept otherwise
        self.path = path
        session = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
        with MODELS_IN_USE, torch.inference_mode():  # no other thread's hooks on the networks meanwhile
            reference = dict(zip(spec.output_names, (t.float().numpy() for t in graph(example))))
        candidate = dict(zip(spec.output_names, session.run(list(spec.output_names), {"x": example.numpy()})))
        problems = parity_problems(spec.measures(reference), spec.measures(candidate), spec.tolerances)
        if problems:
            path.unlink(missing_ok=True)  # not kept: a later load exports again rather than reuse a bad graph
            raise ValueError("outputs differ from PyTorch on the check image: " + "; ".join(problems))
        self._session, self.state = session, READY
        self.reason = ("exported now" if self.exported else "cached graph reused") + f", parity checked ({path.name})"

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """The graph's outputs for a preprocessed batch, or None when the PyTorch path must run."""
        import torch

        session = self._session
        if session is None:
            return None
        feed = {"x": np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())}
        with MODELS_IN_USE:  # one pass at a time on the shared models, as for PyTorch
            outputs = session.run(list(self.spec.output_names), feed)
        return {name: torch.from_numpy(value) for name, value in zip(self.spec.output_names, outputs)}


def runtime_of(model: Any) -> str:
    """Which runtime a model's forward pass uses now ("ONNX Runtime fp32" or "PyTorch fp32 eager")."""
    forward = getattr(model, "onnx", None)
    return forward.runtime if isinstance(forward, OnnxForward) else TORCH_RUNTIME


def wait_for_runtime(model: Any, timeout: float = 300.0) -> str:
    """Wait (at most `timeout` s) until a model's ONNX Runtime session is ready or has fallen back; the runtime.

    For long runs (an archive, a benchmark): they are measured and scored on the runtime they end on, not on
    PyTorch during the one-off export.
    """
    forward = getattr(model, "onnx", None)
    if isinstance(forward, OnnxForward):
        forward.wait(timeout)
    return runtime_of(model)


def runtime_note(model: Any) -> str:
    """One line for the System page: the runtime and, on PyTorch, why ONNX Runtime is not (yet) used."""
    forward = getattr(model, "onnx", None)
    if not isinstance(forward, OnnxForward):
        return f"Runtime: {TORCH_RUNTIME}"
    if forward.ready:
        return f"Runtime: {ONNX_RUNTIME} ({forward.reason}); Grad-CAM maps in PyTorch"
    return f"Runtime: {TORCH_RUNTIME} (ONNX Runtime {'being prepared' if forward.state == PENDING else 'not used'}: " \
           f"{forward.reason})"
