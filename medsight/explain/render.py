"""Rendering of explanation maps: colour LUT, CLAHE, adaptive-alpha overlay, three-panel figure, PNG bytes.

Every map in the product (paper attention, spatial anomaly map, per-pathology Grad-CAM) is drawn by this
module so that they look the same on the Heatmap page, the Analyze page and in the PDF report.

Colour scale: a 256-entry LUT interpolated linearly between four anchors, chosen so that luminance rises
monotonically with the value (a reader can rank regions even in greyscale print):

    value 0.00  black     (  0,   0,   0)
    value 0.35  dark red  (139,   0,   0)
    value 0.70  orange    (255, 140,   0)
    value 1.00  yellow    (255, 255,   0)

Overlay: the map is resized to the radiograph (bicubic) and blended over a CLAHE-enhanced copy of it with a
per-pixel opacity ``alpha = (max(0, (h - p30) / (1 - p30)))**1.3 * opacity``, where ``p30`` is the 30th
percentile of the map. The lowest 30 % of the map is therefore fully transparent and the anatomy stays
readable; the exponent keeps weak responses faint. The three-panel figure draws a full-size film and its map
at twice the panel's pixel width (area-averaged), not at the film's resolution; `panel_images` keeps the
film's resolution for downloads.

Example:
    >>> import numpy as np
    >>> from medsight.explain.render import three_panels, to_png_bytes
    >>> image = np.random.default_rng(0).random((256, 256), dtype=np.float32)
    >>> heat = np.zeros((256, 256), np.float32); heat[100:140, 60:90] = 1
    >>> png = to_png_bytes(three_panels(image, heat, "Spatial anomaly map", score_text="score 0.41"))
    >>> png[:4] == b"\\x89PNG"
    True
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from PIL import Image

# Anchor positions and colours of the LUT (see module docstring).
LUT_ANCHORS: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.00, (0, 0, 0)),  # black
    (0.35, (139, 0, 0)),  # dark red
    (0.70, (255, 140, 0)),  # orange
    (1.00, (255, 255, 0)),  # yellow
)

ALPHA_PERCENTILE = 30.0  # the part of the map below this percentile is fully transparent
ALPHA_GAMMA = 1.3  # >1 keeps weak responses faint
DEFAULT_OPACITY = 0.65
PREVIEW_SIDE = 640  # a results-list preview: half the page wide on a laptop screen

# Dark theme of the rendered figure (matches the app's dark UI and prints acceptably).
_BACKGROUND = "#0e1117"
_TEXT = "#fafafa"
_MUTED = "#b0b6c3"


def build_lut(anchors: tuple[tuple[float, tuple[int, int, int]], ...] = LUT_ANCHORS) -> np.ndarray:
    """256×3 uint8 colour table interpolated linearly between anchors.

    Args:
        anchors: (position in [0, 1], (r, g, b)) pairs, positions increasing from 0 to 1.

    Returns:
        uint8 array of shape (256, 3).
    """
    positions = np.array([p for p, _ in anchors], dtype=np.float64)
    colours = np.array([c for _, c in anchors], dtype=np.float64)
    if positions[0] != 0.0 or positions[-1] != 1.0 or np.any(np.diff(positions) <= 0):
        raise ValueError("LUT anchor positions must increase strictly from 0 to 1")
    x = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(x, positions, colours[:, ch]) for ch in range(3)], axis=1)
    return np.clip(np.rint(lut), 0, 255).astype(np.uint8)


LUT = build_lut()


def _as_gray(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Validate an image and return it as float32 HxW in [0, 1]."""
    array = np.asarray(image)
    if array.ndim == 2 and array.dtype == np.float32 and min(array.shape) >= 2 and _within_unit_range(array):
        return array  # already what this returns: no full-size copies (a 2k film is 20 MB a pass)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        array = array[..., :3].astype(np.float32)
        if np.issubdtype(np.asarray(image).dtype, np.integer):
            array = array / 255.0
        array = array.mean(axis=2)
    elif array.ndim == 2:
        array = array.astype(np.float32)
        if np.issubdtype(np.asarray(image).dtype, np.integer):
            array = array / float(np.iinfo(np.asarray(image).dtype).max)
    else:
        raise ValueError(f"{name} must be a 2-D greyscale array (or HxWx3 RGB); got shape {array.shape}")
    if array.size == 0 or min(array.shape) < 2:
        raise ValueError(f"{name} is empty or too small (shape {array.shape})")
    array = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(array, 0.0, 1.0).astype(np.float32, copy=False)


def _within_unit_range(array: np.ndarray) -> bool:
    """True when every value is finite and in [0, 1] (min and max carry any NaN, so they answer both)."""
    low, high = float(array.min()), float(array.max())
    return 0.0 <= low and high <= 1.0


def normalise_heat(raw: np.ndarray) -> np.ndarray:
    """Min–max scale a raw map to [0, 1]; a constant (or empty-signal) map becomes all zeros.

    Args:
        raw: any real-valued 2-D map (e.g. a Grad-CAM before scaling).

    Returns:
        float32 array of the same shape in [0, 1].
    """
    raw = np.nan_to_num(np.asarray(raw, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if raw.ndim != 2:
        raise ValueError(f"a heatmap must be 2-D; got shape {raw.shape}")
    low, high = float(raw.min()), float(raw.max())
    if high - low <= 1e-12:
        return np.zeros_like(raw, dtype=np.float32)
    return ((raw - low) / (high - low)).astype(np.float32)


def resize_heat(heat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of a map to (height, width), clipped back to [0, 1] (bicubic overshoots)."""
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"a heatmap must be 2-D; got shape {heat.shape}")
    height, width = int(shape[0]), int(shape[1])
    if heat.shape == (height, width):
        if _within_unit_range(heat):
            return heat
        return np.clip(np.nan_to_num(heat, nan=0.0), 0.0, 1.0).astype(np.float32, copy=False)
    heat = cv2.resize(heat, (width, height), interpolation=cv2.INTER_CUBIC)
    np.nan_to_num(heat, copy=False, nan=0.0)  # a fresh array: cleaned in place
    return np.clip(heat, 0.0, 1.0, out=heat)


def apply_colormap(heat: np.ndarray) -> np.ndarray:
    """Colour a map with the black → dark red → orange → yellow LUT.

    Args:
        heat: HxW float map; values are clipped to [0, 1].

    Returns:
        uint8 RGB array HxWx3.
    """
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"a heatmap must be 2-D; got shape {heat.shape}")
    index = np.rint(np.clip(np.nan_to_num(heat, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)
    return LUT[index]


def clahe(image: np.ndarray, clip_limit: float = 0.01, kernel_fraction: float = 1 / 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of a radiograph (scikit-image, float precision).

    Args:
        image: HxW float image in [0, 1].
        clip_limit: scikit-image clip limit (normalised, 0–1; higher = stronger contrast).
        kernel_fraction: contextual region size as a fraction of the image side (1/8 = 8×8 tiles).

    Returns:
        float32 HxW image in [0, 1].
    """
    from skimage.exposure import equalize_adapthist

    gray = _as_gray(image)
    if float(gray.max() - gray.min()) < 1e-6:
        return gray.copy()
    kernel = (max(2, int(gray.shape[0] * kernel_fraction)), max(2, int(gray.shape[1] * kernel_fraction)))
    out = equalize_adapthist(gray, kernel_size=kernel, clip_limit=clip_limit, nbins=256)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def overlay_alpha(heat: np.ndarray, opacity: float = DEFAULT_OPACITY) -> np.ndarray:
    """Per-pixel opacity ``(max(0, (h - p30) / (1 - p30)))**1.3 * opacity`` of a [0, 1] map."""
    heat = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be between 0 and 1; got {opacity}")
    p30 = float(np.percentile(heat, ALPHA_PERCENTILE))
    if p30 >= 1.0 - 1e-6:
        return np.zeros_like(heat)
    ramp = np.maximum(0.0, (heat - p30) / (1.0 - p30))
    return (ramp**ALPHA_GAMMA * opacity).astype(np.float32)


def gray_to_rgb(image: np.ndarray) -> np.ndarray:
    """float [0, 1] greyscale → uint8 RGB."""
    gray = _as_gray(image)
    return np.repeat(np.rint(gray * 255.0).astype(np.uint8)[..., None], 3, axis=2)


def overlay(image: np.ndarray, heat: np.ndarray, opacity: float = DEFAULT_OPACITY) -> np.ndarray:
    """Blend a coloured map over the CLAHE-enhanced radiograph with adaptive opacity.

    Args:
        image: HxW float radiograph in [0, 1] (bright = dense).
        heat: map in [0, 1], any size; resized bicubically to the image.
        opacity: maximum opacity of the map, 0–1.

    Returns:
        uint8 RGB array with the image's height and width.
    """
    gray = _as_gray(image)
    heat = resize_heat(heat, gray.shape)
    base = np.repeat(clahe(gray)[..., None], 3, axis=2)
    colour = apply_colormap(heat).astype(np.float32) / 255.0
    alpha = overlay_alpha(heat, opacity)[..., None]
    blended = base * (1.0 - alpha) + colour * alpha
    return np.clip(np.rint(blended * 255.0), 0, 255).astype(np.uint8)


def _lut_cmap():
    from matplotlib.colors import ListedColormap

    return ListedColormap(LUT.astype(np.float32) / 255.0, name="medsight_heat")


def three_panels(
    image: np.ndarray,
    heat: np.ndarray,
    title: str,
    subtitle: str = "",
    caption: str = "",
    *,
    score_text: str = "",
    opacity: float = DEFAULT_OPACITY,
    panel_inches: float = 4.0,
    dpi: int = 110,
) -> np.ndarray:
    """Render original | heatmap | overlay side by side with titles, on a dark background.

    Args:
        image: HxW float radiograph in [0, 1].
        heat: map in [0, 1] (resized to the image).
        title: figure title (e.g. "Spatial anomaly map").
        subtitle: second line under the title (e.g. tier and method).
        caption: honest description of what the map is, printed under the panels (wrapped).
        score_text: shown in the overlay panel's title (e.g. "score 0.41 · threshold 0.35").
        opacity: maximum opacity of the overlay.
        panel_inches: width of each panel in inches.
        dpi: output resolution.

    Returns:
        uint8 RGB array of the whole figure.
    """
    # The object-oriented API (no pyplot) keeps this thread-safe under Streamlit and needs no display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Each picture is drawn at exactly its panel's pixel size and placed 1:1 (figimage): no axes to lay out and
    # no resampling inside matplotlib, which cost most of a figure's time.
    aspect_source = _as_gray(image)
    aspect = aspect_source.shape[0] / aspect_source.shape[1]
    panel_px = max(2, int(round((panel_inches - 0.1) * dpi)))
    panel_shape = (max(2, int(round(panel_px * aspect))), panel_px)
    gray = _fit(aspect_source, panel_shape)
    heat_full = _display_heat(heat, gray.shape)
    caption_lines = textwrap.wrap(caption, width=int(panel_inches * 3 * 12.5)) if caption else []
    top_inches = 0.75 if subtitle else 0.5
    bottom_inches = 0.55 + 0.22 * len(caption_lines)
    fig_w = panel_inches * 3 + 0.4
    fig_h = panel_inches * aspect + top_inches + bottom_inches + 0.35
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi, facecolor=_BACKGROUND)
    FigureCanvasAgg(fig)

    fig.text(0.5, 1 - 0.32 / fig_h, title, ha="center", va="center", color=_TEXT, fontsize=14, weight="bold")
    if subtitle:
        fig.text(0.5, 1 - 0.6 / fig_h, subtitle, ha="center", va="center", color=_MUTED, fontsize=10)

    panel_bottom = int(round(bottom_inches * dpi))
    panel_titles = ("Original", "Heatmap", "Overlay" + (f" — {score_text}" if score_text else ""))
    pictures = (gray_to_rgb(gray), apply_colormap(heat_full), overlay(gray, heat_full, opacity))
    for i, (panel_title, picture) in enumerate(zip(panel_titles, pictures)):
        left = int(round((0.2 + i * panel_inches + 0.05) * dpi))
        fig.figimage(picture, xo=left, yo=panel_bottom, origin="upper")
        fig.text((left + panel_px / 2) / (fig_w * dpi), (panel_bottom + panel_shape[0] + 5 * dpi / 72) / (fig_h * dpi),
                 panel_title, ha="center", va="bottom", color=_TEXT, fontsize=12)

    # A thin colour bar under the heatmap panel so the scale is explicit.
    import matplotlib.cm as cm
    from matplotlib.colors import Normalize

    bar_left = (0.2 + panel_inches + 0.35) / fig_w
    bar_ax = fig.add_axes((bar_left, (bottom_inches - 0.3) / fig_h, (panel_inches - 0.7) / fig_w, 0.1 / fig_h))
    bar = fig.colorbar(cm.ScalarMappable(norm=Normalize(0, 1), cmap=_lut_cmap()), cax=bar_ax, orientation="horizontal")
    bar.set_ticks([0, 1], labels=["low", "high"])
    bar.ax.tick_params(colors=_MUTED, labelsize=8, length=0, pad=2)
    bar.outline.set_edgecolor(_MUTED)

    for j, line in enumerate(caption_lines):
        fig.text(0.5, (bottom_inches - 0.55 - 0.22 * j) / fig_h, line, ha="center", va="top", color=_MUTED, fontsize=10)

    canvas = fig.canvas
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3])


def _display_copy(gray: np.ndarray, side: int) -> np.ndarray:
    """The radiograph at no more than `side` pixels on its long side (area-averaged), for a figure panel.

    A panel is a few hundred pixels wide: drawing CLAHE and the overlay of a 2k film at full size and
    letting matplotlib shrink it cost seconds and hundreds of MB for pixels nobody sees.
    """
    if max(gray.shape) <= side:
        return gray
    scale = side / max(gray.shape)
    size = (max(2, round(gray.shape[1] * scale)), max(2, round(gray.shape[0] * scale)))
    return np.clip(cv2.resize(gray, size, interpolation=cv2.INTER_AREA), 0.0, 1.0)


def _fit(gray: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The radiograph resampled to exactly `shape` (area-averaged when shrinking), kept in [0, 1]."""
    if gray.shape == tuple(shape):
        return gray
    shrinking = gray.shape[0] > shape[0]
    resized = cv2.resize(np.asarray(gray, dtype=np.float32), (int(shape[1]), int(shape[0])),
                         interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    return np.clip(resized, 0.0, 1.0)


def _display_heat(heat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A map at a figure's display size: a coarse grid is upsampled once, a full-size map area-averaged."""
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim == 2 and heat.shape[0] > shape[0] and heat.shape[1] > shape[1]:
        small = cv2.resize(heat, (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_AREA)
        return resize_heat(small, shape)
    return resize_heat(heat, shape)


def to_png_bytes(rgb: np.ndarray) -> bytes:
    """Encode a uint8 RGB (or greyscale) array as PNG bytes.

    Raises:
        ValueError: when the array is not HxW or HxWx3/4.
    """
    array = np.asarray(rgb)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"expected an HxW or HxWx3 image; got shape {array.shape}")
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8) if array.max() > 1 else np.rint(np.clip(array, 0, 1) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


MAP_KINDS = ("paper_attention", "spatial_anomaly", "patch_deviation", "pathology_gradcam")


@dataclass
class HeatmapResult:
    """One explanation map with its rendering; the same shape for every kind of map.

    Attributes:
        kind: "paper_attention", "spatial_anomaly", "patch_deviation" or "pathology_gradcam".
        heat: float32 HxW in [0, 1]; at the radiograph's resolution (the paper map is 384×384).
        panels: uint8 RGB three-panel figure (original | heatmap | overlay); None until rendered when the
            map was made with ``render=False`` (`png()` and `ensure_panels()` render it on demand).
        title: short title, e.g. "Spatial anomaly map".
        caption: honest description of what the map shows and does not show.
        score: the score the map explains (fused anomaly score or label probability), if any.
        label: the pathology label for per-label Grad-CAM, else "".
        image: float32 HxW radiograph the map was rendered over (same size as `heat`).
        subtitle: second title line (tier, method).
        score_text: text shown in the overlay panel title.
        opacity: overlay opacity used for `panels`.
        details: JSON-serialisable extras (threshold, components, timings, target layer, tier, ...).
    """

    kind: str
    heat: np.ndarray
    panels: np.ndarray | None
    title: str
    caption: str
    score: float | None = None
    label: str = ""
    image: np.ndarray | None = field(default=None, repr=False)
    subtitle: str = ""
    score_text: str = ""
    opacity: float = DEFAULT_OPACITY
    details: dict[str, Any] = field(default_factory=dict)

    def ensure_panels(self) -> np.ndarray:
        """The three-panel figure, rendering it first if the map was made without it."""
        if self.panels is None:
            if self.image is None:
                raise ValueError("this map has neither panels nor its radiograph; it cannot be drawn")
            self.panels = three_panels(
                self.image, self.heat, self.title, self.subtitle, self.caption,
                score_text=self.score_text, opacity=self.opacity,
            )
        return self.panels

    def png(self) -> bytes:
        """The three-panel figure as PNG bytes (encoded once per drawing: pages show it on every rerun)."""
        panels = self.ensure_panels()
        cached = self.__dict__.get("_png")
        if cached is None or cached[0] is not panels:
            cached = (panels, to_png_bytes(panels))
            self.__dict__["_png"] = cached
        return cached[1]

    def preview_jpeg(self, side: int = PREVIEW_SIDE) -> bytes:
        """The overlay alone, at no more than `side` pixels on its long side, as JPEG bytes; drawn once.

        For a list of results, where the three-panel figure (hundreds of ms to draw) would be shrunk anyway.
        """
        cached = self.__dict__.setdefault("_previews", {})
        if side not in cached:
            if self.image is None:
                raise ValueError("this map was created without its radiograph; it cannot be previewed")
            gray = _display_copy(_as_gray(self.image), side)
            picture = overlay(gray, _display_heat(self.heat, gray.shape), self.opacity)
            buffer = io.BytesIO()
            Image.fromarray(picture).save(buffer, format="JPEG", quality=90)
            cached[side] = buffer.getvalue()
        return cached[side]

    def panel_images(self, opacity: float | None = None) -> dict[str, np.ndarray]:
        """The three panels separately, without titles, at the map's resolution (for downloads)."""
        if self.image is None:
            raise ValueError("this map was created without its radiograph; only the combined figure exists")
        opacity = self.opacity if opacity is None else opacity
        return {
            "original": gray_to_rgb(self.image),
            "heatmap": apply_colormap(self.heat),
            "overlay": overlay(self.image, self.heat, opacity),
        }

    def with_opacity(self, opacity: float) -> "HeatmapResult":
        """A copy re-rendered at another overlay opacity (the map itself is not recomputed)."""
        if self.image is None:
            raise ValueError("this map was created without its radiograph; it cannot be re-rendered")
        panels = three_panels(
            self.image, self.heat, self.title, self.subtitle, self.caption, score_text=self.score_text, opacity=opacity
        )
        return HeatmapResult(
            kind=self.kind, heat=self.heat, panels=panels, title=self.title, caption=self.caption,
            score=self.score, label=self.label, image=self.image, subtitle=self.subtitle,
            score_text=self.score_text, opacity=float(opacity), details=dict(self.details),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (no arrays): kind, titles, score, shapes, PNG size, details."""
        heat = np.asarray(self.heat)
        peak = np.unravel_index(int(np.argmax(heat)), heat.shape) if heat.size else (0, 0)
        return {
            "kind": self.kind,
            "title": self.title,
            "subtitle": self.subtitle,
            "caption": self.caption,
            "score": None if self.score is None else float(self.score),
            "label": self.label,
            "score_text": self.score_text,
            "opacity": float(self.opacity),
            "heat_shape": list(heat.shape),
            "heat_peak_yx": [int(peak[0]), int(peak[1])],
            "heat_peak_fraction_yx": [
                round(float(peak[0]) / max(1, heat.shape[0] - 1), 4),
                round(float(peak[1]) / max(1, heat.shape[1] - 1), 4),
            ],
            "panels_shape": None if self.panels is None else list(np.asarray(self.panels).shape),
            "png_bytes": None if self.panels is None else len(self.png()),
            "details": self.details,
        }


def make_result(
    kind: str,
    image: np.ndarray,
    heat: np.ndarray,
    title: str,
    caption: str,
    *,
    score: float | None = None,
    label: str = "",
    subtitle: str = "",
    score_text: str = "",
    opacity: float = DEFAULT_OPACITY,
    details: dict[str, Any] | None = None,
    render: bool = True,
) -> HeatmapResult:
    """Build a `HeatmapResult`: resize the map to the image, render the three panels.

    Args:
        kind: one of `MAP_KINDS`.
        image: HxW float radiograph in [0, 1]; the map is rendered at this resolution.
        heat: map in [0, 1] (any size; resized bicubically to the image).
        title, caption, subtitle, score_text: texts for the figure (see `three_panels`).
        score: the score the map explains.
        label: pathology label for per-label maps.
        opacity: overlay opacity.
        details: JSON-serialisable extras.
        render: draw the three panels now (False for batch evaluation; they are drawn on first use).

    Returns:
        HeatmapResult with `heat` at the image's resolution.
    """
    if kind not in MAP_KINDS:
        raise ValueError(f"unknown map kind {kind!r}; expected one of {MAP_KINDS}")
    gray = _as_gray(image)
    heat_full = resize_heat(heat, gray.shape)
    panels = three_panels(gray, heat_full, title, subtitle, caption, score_text=score_text, opacity=opacity) if render else None
    return HeatmapResult(
        kind=kind, heat=heat_full, panels=panels, title=title, caption=caption, score=score, label=label,
        image=gray, subtitle=subtitle, score_text=score_text, opacity=float(opacity), details=dict(details or {}),
    )
