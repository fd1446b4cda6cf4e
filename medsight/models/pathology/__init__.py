"""Pathology classifier: per-label probabilities, operating thresholds and Grad-CAM maps for a chest X-ray.

Registry slot ``"pathology.classifier"`` (registered when this module is imported). Sources, in order:

1. FILE (tier real): torchxrayvision's ``densenet121-res224-all`` weights file placed in the user's models
   folder (or the shipped ``models/``), under its original name or as ``densenet121-res224-all.pt``.
2. CACHE (tier real): the same file in torchxrayvision's own cache, ``~/.torchxrayvision/models_data/``.
3. DOWNLOAD (tier real): torchxrayvision downloads it from its GitHub release; only when downloads are allowed.
4. BUILTIN (tier demo): ``pathology_demo.pt``, a reduced DenseNet trained by ``training/train_pathology.py``
   on synthetic phantoms for Consolidation, Nodule, Effusion, Pneumothorax and Cardiomegaly.

Both tiers use torchxrayvision's preprocessing and its operating-point calibration: each label's raw
sigmoid probability ``p`` is mapped piecewise linearly so that the label's operating threshold ``t`` lands
on 0.5 (``op_norm``). `PathologyResult.probabilities` are on that calibrated scale, so ``0.5`` means "at
the operating point" for every label and tier; the raw values and raw thresholds are kept beside them.

Example:
    >>> from medsight.models.pathology import load_classifier
    >>> clf = load_classifier()                                  # doctest: +SKIP
    >>> result = clf.predict(study.image)                        # doctest: +SKIP
    >>> result.positives, result.tier                            # doctest: +SKIP
    (['Effusion'], 'demo')
    >>> heat = clf.gradcam(study.image, "Effusion")              # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy.special import expit as scipy_expit

from medsight import registry
from medsight.config import Settings
from medsight.models import onnx_runtime
from medsight.models.onnx_runtime import TORCH_RUNTIME, OnnxForward
from medsight.models.pathology.labels import (
    DEMO_LABELS,
    DISPLAY_NAMES,
    LABEL_SYNONYMS,
    PHANTOM_FINDING_TO_LABEL,
    RELATED_LABELS,
    XRV_LABELS,
    canonical_label,
    display_name,
)

SLOT_NAME = "pathology.classifier"
XRV_WEIGHTS = "densenet121-res224-all"
DEMO_WEIGHTS_FILE = "pathology_demo.pt"
DEMO_CHECKPOINT_FORMAT = "medsight.pathology.demo/1"
#: Decision threshold on the calibrated scale (the operating point of every label).
CALIBRATED_THRESHOLD = 0.5

__all__ = [
    "CALIBRATED_THRESHOLD", "DEMO_LABELS", "DISPLAY_NAMES", "LABEL_SYNONYMS", "PHANTOM_FINDING_TO_LABEL",
    "RELATED_LABELS", "SLOT_NAME", "XRV_LABELS", "PathologyClassifier", "PathologyResult", "canonical_label",
    "display_name", "load_classifier", "xrv_cache_dir", "xrv_weights_filename",
]


@dataclass
class PathologyResult:
    """Classifier output for one radiograph; `to_dict()` is JSON-serialisable.

    Attributes:
        labels: the model's labels in output order (canonical torchxrayvision names).
        probabilities: calibrated probability per label (operating threshold ↦ 0.5).
        thresholds: decision threshold per label on the same scale as `probabilities` (0.5 each).
        positives: labels with probability ≥ threshold, highest first.
        tier: "real" or "demo".
        provenance: where the model came from (registry provenance dict).
        timings: milliseconds for "preprocess", "inference" and "total".
        raw_probabilities: the network's sigmoid outputs before calibration.
        operating_thresholds: each label's operating threshold on the raw scale (None when it has none).
        model: name and version of the weights.
        input_size: side of the square model input in pixels.
        runtime: what ran the forward pass: "ONNX Runtime fp32" or "PyTorch fp32 eager".
    """

    labels: list[str]
    probabilities: dict[str, float]
    thresholds: dict[str, float]
    positives: list[str]
    tier: str
    provenance: dict[str, Any]
    timings: dict[str, float]
    raw_probabilities: dict[str, float] = field(default_factory=dict)
    operating_thresholds: dict[str, float | None] = field(default_factory=dict)
    model: dict[str, str] = field(default_factory=dict)
    input_size: int = 0
    runtime: str = TORCH_RUNTIME

    @property
    def probability_scale(self) -> str:
        return "calibrated: each label's operating threshold maps to 0.5 (torchxrayvision op_norm)"

    def table(self) -> list[dict[str, Any]]:
        """One row per label, highest probability first (for bars, tables and the PDF)."""
        rows = [
            {
                "label": label,
                "name": display_name(label),
                "probability": self.probabilities[label],
                "threshold": self.thresholds[label],
                "positive": label in self.positives,
                "raw_probability": self.raw_probabilities.get(label),
                "operating_threshold": self.operating_thresholds.get(label),
            }
            for label in self.labels
        ]
        return sorted(rows, key=lambda row: -row["probability"])

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["probability_scale"] = self.probability_scale
        return data


def _round(value: float, digits: int = 5) -> float:
    return float(round(float(value), digits))


class PathologyClassifier:
    """Multi-label chest X-ray classifier with per-label Grad-CAM.

    Args:
        net: a `PathologyNet` (features → ReLU → pooling → linear).
        labels: output labels in order.
        operating_thresholds: raw-scale threshold per label (NaN where a label has none).
        tier: "real" or "demo".
        input_size: model input side in pixels.
        device: torch device string.
        name: model name shown with results.
        version: weights version.
        card: model card (metrics, training facts) when there is one.
    """

    def __init__(self, net, labels: Sequence[str], operating_thresholds: Sequence[float], *, tier: str, input_size: int,
                 device: str = "cpu", name: str = "", version: str = "", card: dict[str, Any] | None = None):
        import torch

        from medsight.models.pathology.torch_model import XRayPreprocess

        if len(labels) != len(operating_thresholds):
            raise ValueError("labels and operating thresholds differ in length")
        # Channels-last weights: oneDNN runs the convolutions in NHWC without layout reorders (faster on
        # CPU; outputs differ by ~1e-6).
        self.net = net.to(device).to(memory_format=torch.channels_last).eval()
        for parameter in self.net.parameters():
            parameter.requires_grad_(False)  # inference only; Grad-CAM differentiates w.r.t. activations
        self.labels = list(labels)
        self.operating_thresholds = np.asarray(operating_thresholds, dtype=np.float64)
        self.tier = str(tier)
        self.input_size = int(input_size)
        self.device = device
        self.name = name
        self.version = version
        self.card = card or {}
        self.provenance: dict[str, Any] | None = None
        self.preprocess = XRayPreprocess(self.input_size)
        # The forward pass in ONNX Runtime once exported and checked (`start_onnx_runtime`); None: PyTorch only.
        self.onnx: OnnxForward | None = None

    # -- helpers -------------------------------------------------------------------------------------------
    def resolve_label(self, label: str) -> str:
        """Canonical label among this model's outputs (accepts synonyms such as "pleural effusion").

        Raises:
            ValueError: when the label is unknown or this model does not predict it.
        """
        canonical = canonical_label(label)
        if canonical not in self.labels:
            raise ValueError(f"This {self.tier} model does not predict {display_name(canonical)!r}; it predicts: "
                             f"{', '.join(display_name(x) for x in self.labels)}.")
        return canonical

    def _provenance(self) -> dict[str, Any]:
        if self.provenance is not None:
            return self.provenance
        for loaded in registry.loaded_models():
            if loaded.model is self:
                self.provenance = loaded.provenance.to_dict()
                return self.provenance
        return {"slot": SLOT_NAME, "tier": self.tier, "source": "direct", "version": self.version}

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Raw sigmoid probabilities (..., n_labels) → calibrated scale (operating threshold ↦ 0.5)."""
        from medsight.models.pathology.torch_model import op_norm

        return op_norm(raw, self.operating_thresholds)

    def raw_probabilities(self, images: Sequence[np.ndarray], batch_size: int = 16) -> np.ndarray:
        """Raw sigmoid probabilities for several images, shape (N, n_labels) (used for evaluation)."""
        import torch

        out = []
        for start in range(0, len(images), batch_size):
            batch = torch.cat([self.preprocess(image) for image in images[start:start + batch_size]]).to(self.device)
            with torch.inference_mode():
                out.append(torch.sigmoid(self.net.logits(batch)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)

    # -- public API ----------------------------------------------------------------------------------------
    def predict(self, image: np.ndarray) -> PathologyResult:
        """Per-label probabilities, thresholds and positives for one radiograph.

        Args:
            image: float HxW in [0, 1], display convention (bright = dense), any aspect ratio (centre-cropped).

        Returns:
            PathologyResult.

        Raises:
            ValueError: when the image is not a 2-D greyscale array in [0, 1].
        """
        return self._predict(image, keep_activations=False)[0]

    def predict_with_activations(self, image: np.ndarray) -> tuple[PathologyResult, Any]:
        """`predict` plus the last dense block's activations (1, C, h, w) of the same forward pass.

        Every label's map can then be drawn from them (`gradcam(..., activations=...)`) without
        preprocessing the radiograph or running the network again. The activations are None when the
        network does not expose its trunk and head (`features`, `relu`, `classifier`).
        """
        return self._predict(image, keep_activations=True)

    def _predict(self, image: np.ndarray, keep_activations: bool) -> tuple[PathologyResult, Any]:
        import torch

        from medsight.models.pathology.torch_model import LogitsAndActivations

        start = time.perf_counter()
        x = self.preprocess(image).to(self.device)
        t_pre = time.perf_counter()
        activations = None
        with torch.inference_mode():
            outputs = self.onnx.run(x) if self.onnx is not None else None
            runtime = TORCH_RUNTIME if outputs is None else self.onnx.runtime
            if outputs is not None:
                logits, activations = outputs["logits"], outputs["activations"] if keep_activations else None
            elif keep_activations and _exposes_head(self.net):
                logits, activations = LogitsAndActivations(self.net)(x)
            else:
                logits = self.net.logits(x)
            raw = torch.sigmoid(logits).float().cpu().numpy()[0]
        t_inf = time.perf_counter()
        calibrated = self.calibrate(raw)
        probabilities = {label: _round(p) for label, p in zip(self.labels, calibrated)}
        thresholds = {label: CALIBRATED_THRESHOLD for label in self.labels}
        positives = sorted((lb for lb in self.labels if probabilities[lb] >= thresholds[lb]), key=lambda lb: -probabilities[lb])
        result = PathologyResult(
            labels=list(self.labels),
            probabilities=probabilities,
            thresholds=thresholds,
            positives=positives,
            tier=self.tier,
            provenance=self._provenance(),
            timings={"preprocess": round((t_pre - start) * 1000, 1), "inference": round((t_inf - t_pre) * 1000, 1),
                     "total": round((time.perf_counter() - start) * 1000, 1)},
            raw_probabilities={label: _round(p) for label, p in zip(self.labels, raw)},
            operating_thresholds={label: (None if math.isnan(t) else _round(t, 6)) for label, t in zip(self.labels, self.operating_thresholds)},
            model={"name": self.name, "version": self.version},
            input_size=self.input_size,
            runtime=runtime,
        )
        return result, activations

    # -- ONNX Runtime --------------------------------------------------------------------------------------
    @property
    def runtime(self) -> str:
        """What runs the forward pass now: "ONNX Runtime fp32" or "PyTorch fp32 eager"."""
        return onnx_runtime.runtime_of(self)

    def start_onnx_runtime(self, folder: str | Path, *, background: bool = True) -> OnnxForward | None:
        """Prepare the forward pass in ONNX Runtime (export cached in `folder`); PyTorch runs until it is ready.

        A network that does not expose its trunk and head (so its activations cannot be exported) stays on PyTorch.
        """
        if not _exposes_head(self.net):
            return None
        self.onnx = OnnxForward.start(self._graph_spec(), Path(folder), str(self.device), background=background)
        return self.onnx

    def _graph_spec(self) -> onnx_runtime.GraphSpec:
        from medsight.models.pathology.torch_model import LogitsAndActivations

        def build(copied: bool):
            import copy

            return LogitsAndActivations(copy.deepcopy(self.net) if copied else self.net)

        def measures(outputs):
            return {"probabilities": self.calibrate(scipy_expit(outputs["logits"].astype(np.float64))),
                    "activations": outputs["activations"]}

        return onnx_runtime.GraphSpec(
            name="pathology-classifier", build=build, example=lambda: self.preprocess(onnx_runtime.check_image()),
            output_names=LogitsAndActivations.OUTPUTS,
            measures=measures, constants=f"{self.name}|{self.input_size}",
            tolerances={"probabilities": onnx_runtime.SCORE_TOLERANCE, "activations": onnx_runtime.MAP_TOLERANCE},
            slot="pathology.classifier")

    def gradcam_heat(self, image: np.ndarray, label: str, *, activations: Any = None
                     ) -> tuple[np.ndarray, dict[str, Any]]:
        """Grad-CAM map of one label without rendering (see `gradcam`).

        Args:
            image: float HxW in [0, 1].
            label: a label this model predicts, or a synonym.
            activations: the last dense block's activations of this image from `predict_with_activations`;
                the map is then computed from them with no forward or backward pass (see `gradcam`).

        Returns:
            (heat float32 HxW in [0, 1] at the image's resolution, details dict).
        """
        from medsight.explain.gradcam import grad_cam, maps_from_channel_weights
        from medsight.models.pathology.torch_model import op_norm, validate_image

        start = time.perf_counter()
        label = self.resolve_label(label)
        index = self.labels.index(label)
        gray = validate_image(image)
        box = self.preprocess.crop_box(gray.shape)
        if activations is not None:
            out = maps_from_channel_weights(activations, *self._head_gradient(activations, index),
                                            output_size=(box.size, box.size))
        else:
            x = self.preprocess(gray).to(self.device)
            out = grad_cam(self.net.target_layer, lambda t: self.net.logits(t)[:, index], x,
                           output_size=(box.size, box.size), model=self.net)
        if any(p.grad is not None for p in self.net.parameters()):  # must never leave parameter gradients
            raise RuntimeError("Grad-CAM left gradients on model parameters")
        if (box.size, box.size) == gray.shape:
            heat = out.heat[0]
        else:
            heat = np.zeros(gray.shape, np.float32)
            heat[box.top:box.top + box.size, box.left:box.left + box.size] = out.heat[0]
        logit = float(out.scores[0])
        raw = float(scipy_expit(logit))  # stable for very negative logits, where exp(-logit) overflows
        threshold = self.operating_thresholds[index]
        calibrated = float(op_norm(np.array([raw]), np.array([threshold]))[0])
        details = {
            "label": label, "logit": _round(logit), "raw_probability": _round(raw), "probability": _round(calibrated),
            "operating_threshold": None if math.isnan(threshold) else _round(threshold, 6),
            "target_layer": "features.norm5 + ReLU (last dense block)", "grid": list(out.raw.shape[1:]),
            "input_size": self.input_size, "crop_box": {"top": box.top, "left": box.left, "size": box.size},
            "empty": bool(out.empty[0]), "tier": self.tier,
            "timings": {"gradcam": round((time.perf_counter() - start) * 1000, 1)},
        }
        return heat, details

    def _head_gradient(self, activations: Any, index: int) -> tuple[Any, Any]:
        """Grad-CAM's channel weights and the label's logit, known in closed form for this network.

        The explained layer feeds a global average pool and a linear layer, so d logit / d A[c, i, j] is
        W[index, c] / (h·w) at every position: the mean gradient Grad-CAM would measure by a backward pass.
        """
        import torch

        with torch.no_grad():
            acts = activations.float()
            weight = self.net.classifier.weight[index].float()
            pooled = acts.mean(dim=(2, 3))
            logit = pooled @ weight + (self.net.classifier.bias[index].float()
                                       if self.net.classifier.bias is not None else 0.0)
            channel_weights = (weight / float(acts.shape[2] * acts.shape[3])).expand(acts.shape[0], -1)
        return channel_weights, logit.reshape(-1)

    def gradcam(self, image: np.ndarray, label: str, *, opacity: float | None = None, render: bool = True,
                activations: Any = None):
        """Grad-CAM of one label's logit on the last dense block, at the image's resolution, rendered.

        The map is taken on the activations after ``norm5`` and its ReLU (the exact input of the pooling
        layer), so it shows where the features that raise this label's logit lie. With a centre crop (non-
        square images) the cropped-away margins have zero heat.

        Args:
            image: float HxW in [0, 1].
            label: a label this model predicts, or a synonym ("pleural effusion").
            opacity: overlay opacity of the rendered panels (default: the renderer's).
            render: draw the panels now; False defers drawing to the first `png()` / `ensure_panels()`.
            activations: this image's activations from `predict_with_activations`: the same map, computed
                from the classifier's own pass (the gradient of a pooled linear head is known in closed
                form, so Grad-CAM equals CAM here) instead of a new forward and backward pass.

        Returns:
            medsight.explain.render.HeatmapResult with kind "pathology_gradcam".

        Raises:
            ValueError: bad image or a label this model does not predict.
        """
        from medsight.explain.render import DEFAULT_OPACITY, make_result
        from medsight.models.pathology.torch_model import validate_image

        start = time.perf_counter()
        gray = validate_image(image)
        heat, details = self.gradcam_heat(gray, label, activations=activations)
        label, name, grid = details["label"], display_name(details["label"]), details["grid"]
        caption = (
            f"Grad-CAM for {name}: regions of the last dense block (after norm5 and ReLU, a {grid[0]}×{grid[1]} grid "
            f"at {self.input_size} px input) whose features raise this label's logit, upsampled to the image. "
            "It shows where the model looked, not the outline of a lesion."
            + (" No region raised this label's score, so the map is empty." if details["empty"] else "")
            + (" Demo tier: trained on synthetic phantoms, not for clinical use." if self.tier == "demo" else "")
        )
        result = make_result(
            "pathology_gradcam", gray, heat, f"{name} — Grad-CAM", caption,
            score=details["probability"], label=label,
            subtitle=f"{registry.TIER_BADGES[registry.Tier(self.tier)]} · {self.name}",
            score_text=f"p {details['probability']:.2f} (operating point 0.50)",
            opacity=DEFAULT_OPACITY if opacity is None else float(opacity),
            details=details,
            render=render,
        )
        details["timings"]["total"] = round((time.perf_counter() - start) * 1000, 1)
        return result

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable description for the System page."""
        return {"name": self.name, "version": self.version, "tier": self.tier, "labels": list(self.labels),
                "input_size": self.input_size, "device": self.device,
                "operating_thresholds": {lb: (None if math.isnan(t) else float(t)) for lb, t in zip(self.labels, self.operating_thresholds)},
                "metrics": self.card.get("metrics", {})}


def _exposes_head(net: Any) -> bool:
    """Whether a network exposes trunk, ReLU and linear head as `PathologyNet` does (its activations can be kept)."""
    import torch

    return (hasattr(net, "features") and hasattr(net, "relu")
            and isinstance(getattr(net, "classifier", None), torch.nn.Linear))


# -- loaders ---------------------------------------------------------------------------------------------------

def xrv_weights_filename() -> str:
    """File name torchxrayvision stores ``densenet121-res224-all`` under (the basename of its release URL)."""
    import torchxrayvision as xrv

    return os.path.basename(xrv.models.model_urls[XRV_WEIGHTS]["weights_url"])


def xrv_cache_dir() -> Path:
    """torchxrayvision's weights cache (``~/.torchxrayvision/models_data/``)."""
    import torchxrayvision as xrv

    return Path(xrv.utils.get_cache_dir())


def _xrv_classifier(model, device: str, name: str) -> PathologyClassifier:
    import torchxrayvision as xrv

    from medsight.models.pathology.torch_model import wrap_xrv_densenet

    spec = xrv.models.model_urls[XRV_WEIGHTS]
    labels = list(spec["labels"])
    if tuple(labels) != XRV_LABELS:
        raise RuntimeError("torchxrayvision's label list for densenet121-res224-all has changed")
    return PathologyClassifier(wrap_xrv_densenet(model), labels, spec["op_threshs"], tier="real",
                               input_size=int(spec["input_resolution"]), device=device,
                               name=f"torchxrayvision DenseNet-121 ({XRV_WEIGHTS})", version=f"torchxrayvision {xrv.__version__}")


def load_xrv_file(path: str | Path, device: str = "cpu") -> PathologyClassifier:
    """Load torchxrayvision ``densenet121-res224-all`` weights from a file, as ``xrv.models.DenseNet`` does.

    torchxrayvision's release files are whole pickled modules; a plain state dict is accepted too.
    Unpickling runs code from the file, so only files the user placed in their own models folder or
    torchxrayvision's cache are read (the same trust torchxrayvision gives its cache).

    Raises:
        RuntimeError: when the file does not hold a DenseNet-121 with the 18 labels.
    """
    import torch
    import torchxrayvision as xrv

    model = xrv.models.DenseNet(weights=None, num_classes=len(XRV_LABELS), in_channels=1)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torchxrayvision's files are pickled modules, which weights_only refuses
        saved = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(saved, torch.nn.Module):
        for module in saved.modules():  # same patch as torchxrayvision for modules pickled by old torch
            if not hasattr(module, "_non_persistent_buffers_set"):
                module._non_persistent_buffers_set = set()
        state = saved.state_dict()
    elif isinstance(saved, dict):
        state = saved.get("state_dict", saved)
    else:
        raise RuntimeError(f"{Path(path).name} holds a {type(saved).__name__}, not torchxrayvision weights")
    state = {k: v for k, v in state.items() if k != "op_threshs"}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{Path(path).name} is not a torchxrayvision DenseNet-121 ({len(missing)} missing, "
                           f"{len(unexpected)} unexpected tensors)")
    model.weights = XRV_WEIGHTS
    model.targets = model.pathologies = list(XRV_LABELS)
    return _xrv_classifier(model.eval(), device, f"torchxrayvision DenseNet-121 ({XRV_WEIGHTS})")


def load_demo_checkpoint(path: str | Path, device: str = "cpu") -> PathologyClassifier:
    """Load the demo-tier checkpoint written by ``training/train_pathology.py``.

    Raises:
        RuntimeError: when the file is not a trained demo checkpoint (an untrained head is never loaded).
    """
    import torch

    from medsight.models.pathology.torch_model import build_demo_densenet

    path = Path(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != DEMO_CHECKPOINT_FORMAT:
        raise RuntimeError(f"{path.name} is not a MedSight demo pathology checkpoint")
    if not ckpt.get("metrics", {}).get("test_auroc"):
        raise RuntimeError(f"{path.name} carries no test metrics; refusing weights that were not trained and evaluated")
    labels = [canonical_label(label) for label in ckpt["labels"]]
    net = build_demo_densenet(len(labels), ckpt["arch"])
    net.load_state_dict(ckpt["state_dict"], strict=True)
    card_path = path.with_name(path.stem + ".card.json")
    card = json.loads(card_path.read_text()) if card_path.is_file() else {"metrics": ckpt["metrics"]}
    return PathologyClassifier(net, labels, ckpt["thresholds"], tier="demo", input_size=int(ckpt["input_size"]), device=device,
                               name="MedSight demo DenseNet (reduced, synthetic phantoms)", version=str(ckpt.get("version", "")),
                               card=card)


def _file_source(ctx: registry.LoadContext) -> registry.Found | None:
    path = ctx.find_file(xrv_weights_filename(), f"{XRV_WEIGHTS}.pt")
    if path is None or not path.is_file():
        return None
    return registry.Found(load_xrv_file(path, ctx.device), path=str(path), version=f"{XRV_WEIGHTS}",
                          notes="torchxrayvision weights from the models folder; op_threshs from torchxrayvision")


def _cache_source(ctx: registry.LoadContext) -> registry.Found | None:
    path = xrv_cache_dir() / xrv_weights_filename()
    if not path.is_file():
        return None
    return registry.Found(load_xrv_file(path, ctx.device), path=str(path), version=f"{XRV_WEIGHTS}",
                          notes="torchxrayvision's cache; op_threshs from torchxrayvision")


def _download_source(ctx: registry.LoadContext) -> registry.Found | None:
    import torchxrayvision as xrv

    xrv.models.get_weights(XRV_WEIGHTS)  # downloads into torchxrayvision's cache (to .part, then renamed)
    path = xrv_cache_dir() / xrv_weights_filename()
    return registry.Found(load_xrv_file(path, ctx.device), path=str(path), version=f"{XRV_WEIGHTS}",
                          notes="downloaded by torchxrayvision from its GitHub release")


def _demo_source(ctx: registry.LoadContext) -> registry.Found | None:
    path = ctx.find_file(DEMO_WEIGHTS_FILE)
    if path is None:
        return None
    classifier = load_demo_checkpoint(path, ctx.device)
    return registry.Found(classifier, path=str(path), version=classifier.version,
                          notes="reduced DenseNet trained on synthetic phantoms (python -m training.train_pathology)")


SLOT = registry.register(registry.ModelSlot(
    name=SLOT_NAME,
    title="Pathology classifier (DenseNet)",
    task="Multi-label chest X-ray findings with operating thresholds and per-label Grad-CAM",
    sources=[
        registry.Source(registry.SourceKind.FILE, "torchxrayvision densenet121-res224-all weights in the models folder", registry.Tier.REAL, _file_source, registry.Domain.CHEST_XR),
        registry.Source(registry.SourceKind.CACHE, "torchxrayvision cache (~/.torchxrayvision/models_data)", registry.Tier.REAL, _cache_source, registry.Domain.CHEST_XR),
        registry.Source(registry.SourceKind.DOWNLOAD, "torchxrayvision download (GitHub release)", registry.Tier.REAL, _download_source, registry.Domain.CHEST_XR),
        registry.Source(registry.SourceKind.BUILTIN, f"demo weights {DEMO_WEIGHTS_FILE} (synthetic phantoms)", registry.Tier.DEMO, _demo_source, registry.Domain.PHANTOM),
    ],
    labels=XRV_LABELS,
    input_spec="greyscale HxW in [0, 1]; torchxrayvision normalisation to [-1024, 1024], centre crop, resize to 224 "
               "(real) or 160 (demo); demo tier predicts Consolidation, Nodule, Effusion, Pneumothorax, Cardiomegaly",
    how_to_get_real="Run `python -m medsight.weights fetch pathology.classifier` (downloads the pinned file and checks its "
                    "sha256), or allow downloads (MEDSIGHT_ALLOW_DOWNLOADS=1) so torchxrayvision fetches densenet121-res224-all, or copy "
                    "its file nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt "
                    "(https://github.com/mlmed/torchxrayvision/releases/tag/v1) into the models folder or "
                    "~/.torchxrayvision/models_data/.",
))


def load_classifier(settings: Settings | None = None, device: str | None = None) -> PathologyClassifier:
    """The pathology classifier from the first available source, with its provenance attached.

    Raises:
        registry.ModelUnavailable: when no source (not even the demo weights) is present.
    """
    loaded = registry.load(SLOT_NAME, settings, device)
    classifier: PathologyClassifier = loaded.model
    classifier.provenance = loaded.provenance.to_dict()
    return classifier
