"""Generic Grad-CAM: a target layer and a scalar score function give a map at image resolution.

Grad-CAM (Selvaraju et al., 2017) weights each channel of a convolutional layer's output by the mean
gradient of a score with respect to that channel, sums the weighted channels and keeps the positive
part: the regions whose activation raises the score. Used here for the spatial anomaly map (score = fused
anomaly score, layer = last VGG16 block) and for per-label pathology maps (score = one label's logit or
probability, layer = DenseNet121's last dense block).

Implementation choices that matter:
- The layer output is captured with a forward hook that hands a *clone* to the rest of the network, so
  an in-place ReLU after the layer (torchvision's DenseNet does ``F.relu(features, inplace=True)``) cannot
  overwrite the activations or break autograd.
- Gradients are taken with ``torch.autograd.grad`` with respect to the captured activations only, so no
  ``.grad`` accumulates on model parameters, and frozen models work (the input is made to require grad).
- The model runs in eval mode (dropout off, batch-norm statistics fixed) and its previous mode is restored.

Example:
    >>> import torch, torchvision
    >>> net = torchvision.models.vgg11(weights=None).eval()
    >>> cam = GradCAM(net.features[18], lambda x: net(x)[:, 3], model=net)
    >>> out = cam(torch.rand(1, 3, 64, 64), output_size=(128, 128))   # doctest: +SKIP
    >>> out.heat.shape                                                  # doctest: +SKIP
    (1, 128, 128)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from medsight.explain.render import resize_heat

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class GradCAMOutput:
    """Result of one Grad-CAM pass over a batch.

    Attributes:
        heat: float32 (B, H, W) maps in [0, 1] at `output_size` (or the feature grid when none was given);
            each map is divided by its own maximum, so 0 means "does not raise the score".
        raw: float32 (B, h, w) positive Grad-CAM at the layer's resolution, before scaling.
        scores: float32 (B,) the score values from the same forward pass.
        channel_weights: float32 (B, C) mean gradient per channel.
        empty: (B,) bool, True where no location raised the score (the map is all zeros).
    """

    heat: np.ndarray
    raw: np.ndarray
    scores: np.ndarray
    channel_weights: np.ndarray
    empty: np.ndarray


def _modules_of(model: nn.Module | Iterable[nn.Module] | None) -> list[nn.Module]:
    if model is None:
        return []
    if isinstance(model, nn.Module):
        return [model]
    return [m for m in model if isinstance(m, nn.Module)]


class GradCAM:
    """Grad-CAM for any differentiable score.

    Args:
        target_layer: module whose output (B, C, h, w) is explained.
        score_fn: maps an input batch to scores of shape (B,) (or a scalar for B = 1). It must run the
            forward pass through `target_layer`.
        model: module(s) to put in eval mode during the pass (their previous mode is restored).
    """

    def __init__(self, target_layer: nn.Module, score_fn: ScoreFn, *, model: nn.Module | Iterable[nn.Module] | None = None):
        if not isinstance(target_layer, nn.Module):
            raise TypeError("target_layer must be a torch.nn.Module")
        self.target_layer = target_layer
        self.score_fn = score_fn
        self.modules = _modules_of(model)

    def __call__(self, x: torch.Tensor, output_size: Sequence[int] | None = None) -> GradCAMOutput:
        """Run the score once and return the maps.

        Args:
            x: input batch (B, ...), e.g. (B, 3, 224, 224).
            output_size: (H, W) of the returned maps (bicubic); None keeps the layer's grid.

        Raises:
            RuntimeError: when the score does not pass through the target layer or does not depend on it.
        """
        captured: list[torch.Tensor] = []

        def hook(_module, _inputs, output):
            if not isinstance(output, torch.Tensor) or output.ndim != 4:
                raise RuntimeError(f"Grad-CAM needs a (B, C, h, w) layer output; got {type(output).__name__}")
            captured.append(output)
            # Downstream layers get a copy: an in-place op after this layer cannot alter what we keep.
            return output.clone()

        previous_modes = [(m, m.training) for m in self.modules]
        handle = self.target_layer.register_forward_hook(hook)
        try:
            for module, _ in previous_modes:
                module.eval()
            with torch.enable_grad():
                inputs = x.detach().clone().requires_grad_(True)  # frozen models still build a graph
                scores = self.score_fn(inputs)
                scores = scores.reshape(-1)
                if not captured:
                    raise RuntimeError("the score function never ran the target layer")
                activations = captured[-1]
                if not scores.requires_grad:
                    raise RuntimeError("the score does not depend on the input; nothing to explain")
                (grads,) = torch.autograd.grad(scores.sum(), activations, allow_unused=True)
                if grads is None:
                    raise RuntimeError("the score does not depend on the target layer")
        finally:
            handle.remove()
            for module, mode in previous_modes:
                module.train(mode)

        with torch.no_grad():
            weights = grads.detach().float().mean(dim=(2, 3))  # (B, C)
        return maps_from_channel_weights(activations, weights, scores, output_size)


def maps_from_channel_weights(activations: torch.Tensor, weights: torch.Tensor, scores: torch.Tensor,
                              output_size: Sequence[int] | None = None) -> GradCAMOutput:
    """Grad-CAM maps from a layer's activations (B, C, h, w) and one weight per channel (B, C).

    Shared by `GradCAM` (weights = mean gradients) and by class activation maps, where a layer that feeds
    a global average pool and a linear head has a known gradient, so no backward pass is needed.
    The positive weighted sum is scaled to peak 1 at the layer's grid and upsampled once to `output_size`.
    """
    with torch.no_grad():
        acts = activations.detach().float()
        weights = weights.detach().float()
        cam = torch.relu((weights[:, :, None, None] * acts).sum(dim=1))  # (B, h, w)
        raw = cam.cpu().numpy().astype(np.float32)
    peaks = raw.reshape(raw.shape[0], -1).max(axis=1)
    empty = peaks <= 1e-12
    scaled = np.where(empty[:, None, None], 0.0, raw / np.where(empty, 1.0, peaks)[:, None, None]).astype(np.float32)
    if output_size is not None:
        size = (int(output_size[0]), int(output_size[1]))
        resized = [resize_heat(m, size) for m in scaled]
        # Bicubic interpolation moves the peak slightly; rescale so every non-empty map peaks at 1.
        scaled = np.stack([_peak_one(m) for m in resized]).astype(np.float32)
    return GradCAMOutput(
        heat=scaled,
        raw=raw,
        scores=scores.detach().float().cpu().numpy().astype(np.float32).reshape(-1),
        channel_weights=weights.cpu().numpy().astype(np.float32),
        empty=empty,
    )


def _peak_one(heat: np.ndarray) -> np.ndarray:
    """A map divided by its maximum in place (a full-size copy costs as much as the resize)."""
    peak = float(heat.max())
    if peak > 0:
        heat /= peak
    return heat


def grad_cam(
    target_layer: nn.Module,
    score_fn: ScoreFn,
    x: torch.Tensor,
    output_size: Sequence[int] | None = None,
    *,
    model: nn.Module | Iterable[nn.Module] | None = None,
) -> GradCAMOutput:
    """One-call Grad-CAM (see `GradCAM`).

    Args:
        target_layer: module whose (B, C, h, w) output is explained.
        score_fn: input batch → (B,) scores; must pass through `target_layer`.
        x: input batch.
        output_size: (H, W) of the returned maps; None keeps the layer's grid.
        model: module(s) held in eval mode during the pass.

    Returns:
        GradCAMOutput with maps in [0, 1].
    """
    return GradCAM(target_layer, score_fn, model=model)(x, output_size)
