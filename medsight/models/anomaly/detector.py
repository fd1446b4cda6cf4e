"""Anomaly scoring: named preprocessing, the calibrated fused score, and `AnomalyDetector`.

Fused score (published design):
    S = 0.4·σ((e_recon − μ_recon)/σ_recon) + 0.2·σ((d_KL − μ_KL)/σ_KL) + 0.4·s_ViT
where e_recon is the VGG16-feature reconstruction MSE of the image (mean over the 512 features), d_KL
the KL divergence of its latent posterior from N(0, I) (mean over the 256 latent dimensions), and s_ViT
the ViT scorer's probability. μ/σ come from the normal training images of the checkpoint; the
published values are used when a checkpoint carries none. Inference uses the posterior mean (no
sampling), so one image always gets the same score.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from medsight.models.anomaly.torch_model import (
    EXTRACTOR_IMAGENET,
    EXTRACTOR_LABELS,
    LAYER_NAME,
    VAE,
    FeatureStandardizer,
    VGG16Features,
    ViTAnomalyScorer,
    kl_per_sample,
    recon_error_per_sample,
)
from medsight.models.onnx_runtime import (
    MAP_TOLERANCE,
    SCORE_TOLERANCE,
    TORCH_RUNTIME,
    GraphSpec,
    OnnxForward,
    check_image,
    runtime_of,
)

INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FUSION_WEIGHTS = (0.4, 0.2, 0.4)  # reconstruction, KL, ViT
PUBLISHED_THRESHOLD = 0.348


@dataclass(frozen=True)
class Calibration:
    """Normal-image statistics that turn raw reconstruction error and KL into z-scores.

    Attributes:
        recon_mean, recon_std: mean / std of e_recon over the normal training images.
        kl_mean, kl_std: mean / std of d_KL over the same images.
        source: "published" (paper values) or a description of the data they were measured on.
        n_images: number of normal images measured (0 for published values).
    """

    recon_mean: float
    recon_std: float
    kl_mean: float
    kl_std: float
    source: str = "published"
    n_images: int = 0

    def __post_init__(self) -> None:
        for name in ("recon_mean", "recon_std", "kl_mean", "kl_std"):
            value = getattr(self, name)
            if not np.isfinite(value):
                raise ValueError(f"Calibration {name} is not a finite number ({value!r}).")
        if self.recon_std <= 0 or self.kl_std <= 0:
            raise ValueError("Calibration standard deviations must be positive.")

    @classmethod
    def published(cls) -> "Calibration":
        """The published statistics (ImageNet VGG16 features, COVID-19 Radiography normals)."""
        return cls(recon_mean=0.01386, recon_std=0.00390, kl_mean=0.6930, kl_std=0.0804, source="published")

    @classmethod
    def from_dict(cls, data: dict | None) -> "Calibration":
        if not data:
            return cls.published()
        return cls(
            recon_mean=float(data["recon_mean"]), recon_std=float(data["recon_std"]),
            kl_mean=float(data["kl_mean"]), kl_std=float(data["kl_std"]),
            source=str(data.get("source", "checkpoint")), n_images=int(data.get("n_images", 0)),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def fuse_scores(recon_error: torch.Tensor, kl_divergence: torch.Tensor, vit_score: torch.Tensor,
                calibration: Calibration, weights: Sequence[float] = FUSION_WEIGHTS
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Fused anomaly score and its three weighted terms (differentiable; works on any shape).

    Returns:
        (fused, {"recon": w1·σ(z_recon), "kl": w2·σ(z_KL), "vit": w3·s_ViT}).
    """
    w_recon, w_kl, w_vit = weights
    components = {
        "recon": w_recon * torch.sigmoid((recon_error - calibration.recon_mean) / calibration.recon_std),
        "kl": w_kl * torch.sigmoid((kl_divergence - calibration.kl_mean) / calibration.kl_std),
        "vit": w_vit * vit_score,
    }
    return components["recon"] + components["kl"] + components["vit"], components


def score_parts(vae: VAE, vit: ViTAnomalyScorer, calibration: Calibration, feats: torch.Tensor
                ) -> dict[str, torch.Tensor]:
    """All score parts from the VAE's input vectors (B, 512), without sampling (z = mu).

    Returns:
        dict with "recon_error", "kl_divergence", "vit_score", "fused", "mu" and the weighted terms
        "recon", "kl", "vit" (all (B,) except "mu" (B, 256)).
    """
    mu, log_var = vae.encoder(feats)
    x_hat = vae.decoder(mu)
    recon = recon_error_per_sample(x_hat, feats)
    kl = kl_per_sample(mu, log_var)
    vit_score = vit(mu)
    fused, parts = fuse_scores(recon, kl, vit_score, calibration)
    return {"recon_error": recon, "kl_divergence": kl, "vit_score": vit_score, "fused": fused, "mu": mu, **parts}


class ScoreGraph(torch.nn.Module):
    """The detector's whole forward pass as one graph (what ONNX Runtime runs): preprocessed images →
    the fused score, its parts and the last conv block's activations (for the deviation map)."""

    OUTPUTS = ("fused", "recon_error", "kl_divergence", "vit_score", "recon", "kl", "vit", "activations")

    def __init__(self, extractor: VGG16Features, vae: VAE, vit: ViTAnomalyScorer,
                 feature_norm: FeatureStandardizer | None, calibration: Calibration) -> None:
        super().__init__()
        self.extractor, self.vae, self.vit, self.feature_norm = extractor, vae, vit, feature_norm
        self.calibration = calibration

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pooled, activations = self.extractor.forward_with_activations(x)
        feats = self.feature_norm(pooled) if self.feature_norm is not None else pooled
        parts = score_parts(self.vae, self.vit, self.calibration, feats)
        return (*(parts[name] for name in self.OUTPUTS[:-1]), activations)


def xray_to_vgg_input(image: np.ndarray, size: int = INPUT_SIZE) -> torch.Tensor:
    """Named preprocessing transform: radiograph → VGG16 input tensor.

    Steps: greyscale float image in [0, 1] (MONOCHROME2: air dark) → Lanczos resize to size×size with
    Pillow (float mode, no 8-bit rounding) → clip to [0, 1] (Lanczos overshoots at edges) → repeat to
    3 channels → ImageNet mean/std normalisation per channel.

    Args:
        image: H×W float array in [0, 1]; an H×W×3/4 colour array is averaged to grey.
        size: output side (224 for VGG16).

    Returns:
        float32 tensor [1, 3, size, size].

    Raises:
        ValueError: on an empty, non-finite, wrong-shaped or out-of-range image.
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array = array[..., :3].mean(axis=-1)
    if array.ndim != 2:
        raise ValueError(f"Expected a 2-D greyscale image, got an array of shape {array.shape}.")
    if min(array.shape) < 2:
        raise ValueError(f"Image too small to analyse ({array.shape[1]}×{array.shape[0]} pixels).")
    array = array.astype(np.float32, copy=False)
    if not np.all(np.isfinite(array)):
        raise ValueError("Image contains missing or infinite pixel values.")
    if array.min() < -1e-3 or array.max() > 1 + 1e-3:
        raise ValueError("Image values must be scaled to [0, 1] (load it through medsight.ingest).")
    resized = Image.fromarray(np.clip(array, 0.0, 1.0), mode="F").resize((size, size), Image.Resampling.LANCZOS)
    grey = torch.from_numpy(np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0))
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((grey.expand(3, size, size) - mean) / std).unsqueeze(0).contiguous()


@dataclass
class AnomalyResult:
    """Anomaly detector output for one image (JSON-ready via `to_dict`).

    Attributes:
        fused_score: S in [0, 1].
        recon_error: e_recon (feature MSE). kl_divergence: d_KL. vit_score: s_ViT in [0, 1].
        components: the three weighted terms of S ("recon", "kl", "vit"); they sum to S.
        threshold: operating threshold; is_anomalous = fused_score >= threshold; margin = S − threshold.
        timings: milliseconds per stage ("preprocess", "extractor", "vae", "vit", "total").
        tier: "real" or "demo". extractor: "imagenet", "demo-phantom" or "demo-seeded".
        provenance: where the weights came from (checkpoint, hashes, calibration source, ...).
        peak_deviation: largest per-position distance of the image's last-block features from normal
            (the deviation map's peak; see `patch.py`), from the same VGG16 pass; None without a patch model.
        deviation_threshold: the normal-range limit of `peak_deviation` (95 % of held-out normal images
            stay below it). deviation_unusual: peak_deviation >= deviation_threshold.
        runtime: what ran the forward pass: "ONNX Runtime fp32" or "PyTorch fp32 eager".
    """

    fused_score: float
    recon_error: float
    kl_divergence: float
    vit_score: float
    components: dict[str, float]
    threshold: float
    is_anomalous: bool
    margin: float
    timings: dict[str, float]
    tier: str
    extractor: str
    calibration_source: str = "published"
    provenance: dict[str, Any] = field(default_factory=dict)
    peak_deviation: float | None = None
    deviation_threshold: float | None = None
    deviation_unusual: bool | None = None
    runtime: str = TORCH_RUNTIME

    def to_dict(self) -> dict:
        return asdict(self)


class AnomalyDetector:
    """VGG16 features → VAE → ViT scorer → calibrated fused anomaly score.

    Args:
        extractor: frozen `VGG16Features` (its `sha256` must match the checkpoint's).
        vae, vit: trained networks.
        calibration: normal-image statistics (`Calibration.published()` when unknown).
        threshold: operating threshold on the fused score.
        provenance: free-form facts shown with every result (tier, checkpoint, hashes...). Its "tier"
            defaults to "real" for the ImageNet extractor and "demo" for any other.
        device: torch device for all three networks.
        feature_norm: optional fixed standardisation of the 512-vector before the VAE (demo tier; see
            `FeatureStandardizer`). Reconstruction error is then measured in standardised units.

    Example:
        >>> detector = load_detector()                      # doctest: +SKIP
        >>> detector.score(study.image).fused_score         # doctest: +SKIP
    """

    def __init__(self, extractor: VGG16Features, vae: VAE, vit: ViTAnomalyScorer,
                 calibration: Calibration | None = None, threshold: float | None = None,
                 provenance: dict[str, Any] | None = None, device: str | torch.device = "cpu",
                 feature_norm: FeatureStandardizer | None = None) -> None:
        self.device = torch.device(device)
        self.feature_norm = feature_norm.to(self.device) if feature_norm is not None else None
        # Channels-last weights make oneDNN run every convolution in NHWC without layout reorders around
        # each layer: faster on CPU, same scores (differences ~1e-6). Converted here, after the weights are
        # set: random initialisation into a channels-last tensor would draw the values in another order.
        self.extractor = extractor.to(self.device).freeze().to(memory_format=torch.channels_last)
        self.vae = vae.to(self.device).eval()
        self.vit = vit.to(self.device).eval()
        for module in (self.vae, self.vit):
            for param in module.parameters():
                param.requires_grad_(False)
        self.calibration = calibration or Calibration.published()
        self.threshold = float(PUBLISHED_THRESHOLD if threshold is None else threshold)
        self.provenance: dict[str, Any] = dict(provenance or {})
        self.provenance.setdefault("tier", "real" if extractor.kind == EXTRACTOR_IMAGENET else "demo")
        self.provenance.setdefault("extractor", extractor.kind)
        self.provenance.setdefault("extractor_label", EXTRACTOR_LABELS.get(extractor.kind, extractor.kind))
        self.provenance.setdefault("extractor_sha256", extractor.sha256)
        self.provenance.setdefault("feature_standardisation", feature_norm is not None)
        self.provenance["calibration"] = self.calibration.to_dict()
        self.provenance["threshold"] = self.threshold
        # Optional per-position model of normal features for the spatial deviation map (see patch.py);
        # attached by the loader when a file fitted on this extractor exists.
        self.patch_model = None
        # The forward pass in ONNX Runtime once exported and checked (`start_onnx_runtime`); None: PyTorch only.
        self.onnx: OnnxForward | None = None

    # Compatibility alias: callers may say `meta`.
    @property
    def meta(self) -> dict[str, Any]:
        return self.provenance

    @property
    def tier(self) -> str:
        return str(self.provenance["tier"])

    #: Human-readable name of `target_layer`.
    target_layer_name = LAYER_NAME

    @property
    def target_layer(self) -> torch.nn.Module:
        """The layer the anomaly maps explain: VGG16's last conv block after its ReLU (14×14 grid at 224 px)."""
        return self.extractor.target_layer

    # ---- stages ---------------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """Image (H×W float [0, 1]) → tensor [1, 3, 224, 224] on the CPU; see `xray_to_vgg_input`."""
        return xray_to_vgg_input(image)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """VGG16 512-vectors (B, 512) for preprocessed tensors [B, 3, 224, 224]."""
        return self.extractor(x.to(self.device))

    def vae_input(self, feats: torch.Tensor) -> torch.Tensor:
        """The VAE's input for VGG16 vectors: standardised when the checkpoint carries a standardisation."""
        feats = feats.to(self.device)
        return self.feature_norm(feats) if self.feature_norm is not None else feats

    def components_from_features(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """All score parts from VGG16 512-vectors (as `features` returns them), without sampling (z = mu).

        Returns:
            dict with "recon_error", "kl_divergence", "vit_score", "fused", "mu" and the weighted terms
            "recon", "kl", "vit" (all (B,) except "mu" (B, 256)).
        """
        return score_parts(self.vae, self.vit, self.calibration, self.vae_input(feats))

    def fused_from_tensor(self, x: torch.Tensor, *, return_activations: bool = False):
        """Differentiable fused score for preprocessed tensors [B, 3, 224, 224] → (B,).

        Gradients flow from the score through ViT → VAE (mu) → VGG16 to the input, although every
        parameter is frozen. With `return_activations=True`, also returns the last VGG16 conv block's
        activation map (B, 512, 14, 14) for Grad-CAM (it requires grad whenever autograd is on).
        """
        x = x.to(self.device)
        if return_activations:
            feats, activations = self.extractor.forward_with_activations(x)
            return self.components_from_features(feats)["fused"], activations
        return self.components_from_features(self.extractor(x))["fused"]

    def latent(self, image: np.ndarray) -> np.ndarray:
        """Posterior mean z (256,) of one image."""
        with torch.inference_mode():
            mu, _ = self.vae.encoder(self.vae_input(self.features(self.preprocess(image))))
        return mu[0].float().cpu().numpy()

    def cls_attention(self, image: np.ndarray) -> np.ndarray:
        """Last ViT block's CLS attention over the 8 latent patches (8,), averaged over heads.

        These patches are slices of the latent vector, not image regions.
        """
        with torch.inference_mode():
            mu, _ = self.vae.encoder(self.vae_input(self.features(self.preprocess(image))))
            return self.vit.cls_attention(mu)[0].float().cpu().numpy()

    # ---- scoring --------------------------------------------------------------------------------
    def score(self, image: np.ndarray) -> AnomalyResult:
        """Score one radiograph (H×W float [0, 1]).

        Raises:
            ValueError: on an unusable image (message is user-facing).
        """
        return self.score_batch([image])[0]

    def score_batch(self, images: Sequence[np.ndarray], batch_size: int = 16) -> list[AnomalyResult]:
        """Score several radiographs; timings are per image (batch time divided by batch size).

        With a patch model, each result also carries the peak deviation from normal, measured on the
        last conv block's activations of the same VGG16 pass.
        """
        return [result for result, _ in self._score_chunks(images, batch_size, keep_activations=False)]

    def score_with_activations(self, image: np.ndarray) -> tuple[AnomalyResult, torch.Tensor]:
        """Score one radiograph and return the last conv block's activations (1, 512, 14, 14) of that pass.

        The deviation map can then be drawn from those activations without running VGG16 again.
        """
        return self._score_chunks([image], 1, keep_activations=True)[0]

    def _score_chunks(self, images: Sequence[np.ndarray], batch_size: int, keep_activations: bool
                      ) -> list[tuple[AnomalyResult, torch.Tensor | None]]:
        results: list[tuple[AnomalyResult, torch.Tensor | None]] = []
        patch = self.patch_model
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            n = len(chunk)
            t0 = time.perf_counter()
            x = torch.cat([self.preprocess(image) for image in chunk])
            t1 = time.perf_counter()
            with torch.inference_mode():
                outputs = self.onnx.run(x) if self.onnx is not None else None
                runtime = TORCH_RUNTIME if outputs is None else self.onnx.runtime
                if outputs is None:
                    outputs, steps = self._torch_pass(x, need_activations=patch is not None or keep_activations)
                else:
                    steps = {"network": time.perf_counter() - t1}
                t4 = time.perf_counter()
                activations = outputs.get("activations")
                peaks = None
                if patch is not None:
                    peaks = patch.distances(activations).amax(dim=(1, 2))
                t5 = time.perf_counter()
            timings = {"preprocess": t1 - t0, **steps, "total": t5 - t0}
            if patch is not None:
                timings["deviation"] = t5 - t4
            timings = {key: round(value * 1000 / n, 2) for key, value in timings.items()}
            for i in range(n):
                result = self.result_from_parts(
                    outputs["fused"][i], outputs["recon_error"][i], outputs["kl_divergence"][i],
                    outputs["vit_score"][i], {key: outputs[key][i] for key in ("recon", "kl", "vit")},
                    timings, peak_deviation=None if peaks is None else float(peaks[i]), runtime=runtime)
                kept = activations[i:i + 1].detach().cpu() if keep_activations and activations is not None else None
                results.append((result, kept))
        return results

    def _torch_pass(self, x: torch.Tensor, need_activations: bool) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """The PyTorch forward pass: score parts (and activations when needed), and seconds per network."""
        t1 = time.perf_counter()
        outputs: dict[str, torch.Tensor] = {}
        if need_activations:
            pooled, outputs["activations"] = self.extractor.forward_with_activations(x.to(self.device))
            feats = self.vae_input(pooled)
        else:
            feats = self.vae_input(self.features(x))
        t2 = time.perf_counter()
        mu, log_var = self.vae.encoder(feats)
        x_hat = self.vae.decoder(mu)
        outputs["recon_error"] = recon_error_per_sample(x_hat, feats)
        outputs["kl_divergence"] = kl_per_sample(mu, log_var)
        t3 = time.perf_counter()
        outputs["vit_score"] = self.vit(mu)
        outputs["fused"], parts = fuse_scores(outputs["recon_error"], outputs["kl_divergence"], outputs["vit_score"],
                                              self.calibration)
        t4 = time.perf_counter()
        return {**outputs, **parts}, {"extractor": t2 - t1, "vae": t3 - t2, "vit": t4 - t3}

    # ---- ONNX Runtime ---------------------------------------------------------------------------
    @property
    def runtime(self) -> str:
        """What runs the forward pass now: "ONNX Runtime fp32" or "PyTorch fp32 eager"."""
        return runtime_of(self)

    def start_onnx_runtime(self, folder: str | Path, *, background: bool = True) -> OnnxForward:
        """Prepare the forward pass in ONNX Runtime (export cached in `folder`); PyTorch runs until it is ready."""
        self.onnx = OnnxForward.start(self._graph_spec(), Path(folder), str(self.device), background=background)
        return self.onnx

    def _graph_spec(self) -> GraphSpec:
        def build(copied: bool) -> ScoreGraph:
            networks = (self.extractor, self.vae, self.vit, self.feature_norm)
            return ScoreGraph(*(copy.deepcopy(m) if copied else m for m in networks), self.calibration)

        def measures(outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            seen = {name: outputs[name] for name in ScoreGraph.OUTPUTS}
            if self.patch_model is not None:  # the deviation map's distances, drawn from the activations
                seen["deviation"] = self.patch_model.distances(torch.from_numpy(outputs["activations"])).numpy()
            return seen

        tolerances = {name: SCORE_TOLERANCE for name in ScoreGraph.OUTPUTS[:-1]}
        tolerances.update(activations=MAP_TOLERANCE, **({"deviation": MAP_TOLERANCE} if self.patch_model else {}))
        return GraphSpec(name="anomaly-detector", build=build, example=lambda: self.preprocess(check_image()),
                         output_names=ScoreGraph.OUTPUTS,
                         measures=measures, tolerances=tolerances, constants=repr(self.calibration.to_dict()),
                         slot="anomaly.detector")

    def result_from_parts(self, fused_score: float, recon_error: float, kl_divergence: float, vit_score: float,
                          components: dict[str, float], timings: dict[str, float],
                          peak_deviation: float | None = None, runtime: str = TORCH_RUNTIME) -> AnomalyResult:
        """An `AnomalyResult` from the score parts of one pass through this detector.

        Used by scoring itself and by the spatial anomaly map, which runs the same forward pass (VGG16 →
        VAE mean → ViT → fused score) before its backward pass, so its score and components can stand for
        `score(image)` without a second VGG16 forward. Threshold, tier and provenance are this detector's.

        Args:
            fused_score, recon_error, kl_divergence, vit_score: values of that pass.
            components: the weighted terms "recon", "kl", "vit".
            timings: milliseconds per step of that pass (must include "total").
            peak_deviation: the pass's peak deviation from normal (with a patch model), else None.
            runtime: what ran the pass ("PyTorch fp32 eager" unless ONNX Runtime did).
        """
        score = float(fused_score)
        scale = self.patch_model.scale if self.patch_model is not None else None
        limit = None if peak_deviation is None or scale is None else float(scale.peak_threshold)
        return AnomalyResult(
            fused_score=score,
            recon_error=float(recon_error),
            kl_divergence=float(kl_divergence),
            vit_score=float(vit_score),
            components={key: float(components[key]) for key in ("recon", "kl", "vit")},
            threshold=self.threshold,
            is_anomalous=score >= self.threshold,
            margin=score - self.threshold,
            timings={key: round(float(value), 2) for key, value in timings.items()},
            tier=self.tier,
            extractor=self.extractor.kind,
            calibration_source=self.calibration.source,
            provenance=dict(self.provenance),
            peak_deviation=None if peak_deviation is None else round(float(peak_deviation), 4),
            deviation_threshold=None if limit is None else round(limit, 4),
            deviation_unusual=None if limit is None else float(peak_deviation) >= limit,
            runtime=runtime,
        )

    def to(self, device: str | torch.device) -> "AnomalyDetector":
        self.device = torch.device(device)
        if self.device.type != "cpu":
            self.onnx = None  # ONNX Runtime serves the CPU only
        for module in (self.extractor, self.vae, self.vit, self.feature_norm):
            if module is not None:
                module.to(self.device)
        return self
