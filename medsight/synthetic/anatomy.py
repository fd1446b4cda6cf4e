"""Normal chest anatomy for the synthetic phantoms, built from analytic shapes on a coordinate grid.

Everything is evaluated on normalised patient coordinates: ``x`` runs from -1 (image left = patient
right on a PA film) to +1, ``y`` from -1 (top) to +1 (feet). A lung is an implicit shape with an
approximate signed distance (positive inside), so findings can re-evaluate it under a transform (a
collapsed lung in pneumothorax is the same lung scaled towards its hilum).

The renderer sums projected densities (body, lungs as negative density, heart, bones, vessels) and
maps them through an exposure curve. All operations are vectorised over the whole grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import numpy as np
from scipy import ndimage

#: Field of view assumed across the image width, used for sizes quoted in reports (cm).
FIELD_OF_VIEW_CM = 40.0

#: Texture fields are made on a fixed coarse grid and upsampled, so a phantom looks the same at any size.
_TEXTURE_GRID = 160


def smoothstep(edge0: float | np.ndarray, edge1: float | np.ndarray, v: np.ndarray) -> np.ndarray:
    """Hermite step from 0 at ``edge0`` to 1 at ``edge1`` (works with edge0 > edge1 too)."""
    t = np.clip((v - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass
class Grid:
    """Pixel grid and its (jittered) normalised patient coordinates."""

    size: int
    x: np.ndarray  # float32 HxW, patient coordinates after rotation/scale/shift jitter
    y: np.ndarray
    px: float  # one pixel in normalised units, for anti-aliasing widths

    @classmethod
    def make(cls, size: int, rotation_deg: float, scale: float, shift: tuple[float, float]) -> "Grid":
        c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
        x0, y0 = np.meshgrid(c, c)
        th = np.deg2rad(rotation_deg)
        xs, ys = x0 - shift[0], y0 - shift[1]
        x = (np.cos(th) * xs + np.sin(th) * ys) / scale
        y = (-np.sin(th) * xs + np.cos(th) * ys) / scale
        return cls(size, x.astype(np.float32), y.astype(np.float32), 2.0 / size / scale)


@dataclass
class LungShape:
    """One lung outline in mirrored coordinates ``xm`` (0 = midline, positive = lateral)."""

    sign: float  # -1 for the patient's right lung (image left), +1 for the left lung
    y_apex: float
    y_cp: float  # level of the lateral costophrenic angle
    x_apex: float
    x_lateral: float
    x_medial: float
    y_dome: float  # top of the hemidiaphragm
    x_dome: float
    knob: float = 0.0  # aortic knob bulge beside this lung (drawn with the mediastinum)

    def sdf(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Approximate signed distance to the lung outline (positive inside), in normalised units."""
        xm = self.sign * x
        t = np.clip((y - self.y_apex) / (self.y_cp - self.y_apex), 0.0, 1.0)
        # Quarter-circle profiles: a rounded apex and a lateral wall that meets the diaphragm steeply,
        # which is what makes a sharp costophrenic angle.
        lateral = self.x_apex + (self.x_lateral - self.x_apex) * np.sqrt(1.0 - (1.0 - t) ** 2)
        tm = np.clip(t / 0.28, 0.0, 1.0)
        medial = self.x_apex - (self.x_apex - self.x_medial) * np.sqrt(1.0 - (1.0 - tm) ** 2)
        u = (xm - self.x_dome) / (self.x_lateral - self.x_dome)
        v = (self.x_dome - xm) / self.x_dome
        dome = np.where(
            u > 0,
            self.y_dome + (self.y_cp - self.y_dome) * np.clip(u, 0, None) ** 2,
            self.y_dome + 0.3 * (self.y_cp - self.y_dome) * np.clip(v, 0, 1) ** 2,
        )
        d = np.minimum(lateral - xm, xm - medial)
        d = np.minimum(d, dome - y)
        d = np.minimum(d, (y - self.y_apex) * 0.6)
        return d

    def diaphragm(self, x: np.ndarray) -> np.ndarray:
        """Height of the hemidiaphragm under image column coordinate ``x`` (continued past the lung)."""
        xm = self.sign * x
        u = (xm - self.x_dome) / (self.x_lateral - self.x_dome)
        v = (self.x_dome - xm) / self.x_dome
        return np.where(
            u > 0,
            self.y_dome + (self.y_cp - self.y_dome) * np.clip(u, 0, None) ** 2,
            self.y_dome + 0.3 * (self.y_cp - self.y_dome) * np.clip(v, 0, 1.5) ** 2,
        )

    def scaled(self, factor: float, cx: float, cy: float) -> "LungShape":
        """The same outline shrunk by ``factor`` about mirrored point (cx, cy), as a collapsed lung."""

        def sx(v: float) -> float:
            return cx + (v - cx) * factor

        def sy(v: float) -> float:
            return cy + (v - cy) * factor

        return LungShape(
            self.sign, sy(self.y_apex), sy(self.y_cp), sx(self.x_apex), sx(self.x_lateral),
            sx(self.x_medial), sy(self.y_dome), sx(self.x_dome), self.knob * factor,
        )

    def height_fraction(self, y: float) -> float:
        """0 at the apex, 1 at the costophrenic angle."""
        return float((y - self.y_apex) / (self.y_cp - self.y_apex))


@dataclass
class Heart:
    """Cardiac silhouette: a tilted ellipse resting on the diaphragm, left of midline in the patient."""

    cx: float
    cy: float
    a: float  # semi-axis along the long (tilted) axis
    b: float
    tilt_deg: float

    def soft(self, x: np.ndarray, y: np.ndarray, px: float) -> np.ndarray:
        th = math.radians(self.tilt_deg)
        # The lower half is stretched downwards so the heart rests broadly on the diaphragm.
        yy = np.where(y > self.cy, self.cy + (y - self.cy) * 0.6, y)
        xr = math.cos(th) * (x - self.cx) + math.sin(th) * (yy - self.cy)
        yr = -math.sin(th) * (x - self.cx) + math.cos(th) * (yy - self.cy)
        r = np.sqrt((xr / self.a) ** 2 + (yr / self.b) ** 2)
        return smoothstep(1.0 + px / self.b, 1.0 - px / self.b, r)

    def half_width(self) -> float:
        th = np.deg2rad(self.tilt_deg)
        return float(np.sqrt((self.a * np.cos(th)) ** 2 + (self.b * np.sin(th)) ** 2))


@dataclass
class Anatomy:
    """Random anatomical parameters of one synthetic patient."""

    right: LungShape
    left: LungShape
    heart: Heart
    chest_wall: float  # soft tissue beyond the lateral lung edges
    neck_half_width: float
    shoulder_y: float
    rib_start: float
    rib_spacing: float
    rib_tilt: float
    spine_half_width: float
    breast: float  # 0 = none
    lung_air: float
    vessel_amp: float
    hilum_amp: float
    bone_amp: float
    rotation_deg: float
    scale: float
    shift: tuple[float, float]
    exposure: float
    gamma: float
    noise_sigma: float
    mediastinum: tuple[float, float] = (0.1, 0.1)  # half-widths right/left of the upper mediastinum

    @property
    def lungs(self) -> tuple[LungShape, LungShape]:
        return (self.right, self.left)


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one patient's anatomy, exposure and positioning."""
    u = rng.uniform
    apex = u(-0.82, -0.68)
    right = LungShape(
        sign=-1.0, y_apex=apex + u(-0.02, 0.02), y_cp=u(0.46, 0.66), x_apex=u(0.25, 0.33),
        x_lateral=u(0.71, 0.86), x_medial=u(0.03, 0.05), y_dome=u(0.22, 0.36), x_dome=u(0.36, 0.46),
    )
    left = LungShape(
        sign=1.0, y_apex=apex + u(0.0, 0.04), y_cp=right.y_cp + u(0.01, 0.07),
        x_apex=u(0.26, 0.32), x_lateral=right.x_lateral + u(-0.04, 0.02), x_medial=u(0.03, 0.05),
        y_dome=right.y_dome + u(0.04, 0.10), x_dome=u(0.40, 0.50), knob=u(0.05, 0.10),
    )
    heart = Heart(cx=u(0.07, 0.12), cy=u(0.10, 0.18), a=u(0.31, 0.35), b=u(0.19, 0.23), tilt_deg=u(22, 34))
    anat = Anatomy(
        right=right, left=left, heart=heart,
        chest_wall=u(0.08, 0.16), neck_half_width=u(0.2, 0.26), shoulder_y=u(-0.9, -0.8),
        rib_start=u(-0.86, -0.80), rib_spacing=u(0.125, 0.145), rib_tilt=u(0.20, 0.30),
        spine_half_width=u(0.075, 0.09), breast=float(u(0.0, 0.12) if rng.random() < 0.5 else 0.0),
        lung_air=u(0.62, 0.78), vessel_amp=u(0.14, 0.22), hilum_amp=u(0.14, 0.22), bone_amp=u(0.9, 1.15),
        rotation_deg=u(-3.5, 3.5), scale=u(0.95, 1.05), shift=(u(-0.03, 0.03), u(-0.04, 0.04)),
        exposure=u(1.05, 1.45), gamma=u(0.85, 1.2), noise_sigma=u(0.006, 0.018),
        mediastinum=(u(0.10, 0.14), u(0.09, 0.13)),
    )
    set_heart_ctr(anat, u(0.36, 0.47))  # a normal cardiothoracic ratio whatever the chest width
    return anat


def set_heart_ctr(anat: Anatomy, ctr: float) -> None:
    """Resize the heart so that its horizontal extent is ``ctr`` of the internal thoracic width."""
    thorax = anat.right.x_lateral + anat.left.x_lateral
    current = 2 * anat.heart.half_width()
    k = ctr * thorax / current
    anat.heart.a *= k
    anat.heart.b *= 1 + 0.5 * (k - 1)
    # The heart enlarges mostly to the patient's left and downward.
    anat.heart.cx += 0.25 * (k - 1) * anat.heart.a


def texture(rng: np.random.Generator, size: int, sigmas: tuple[float, float]) -> np.ndarray:
    """Band-passed noise on the coarse texture grid, upsampled to ``size`` and scaled to unit std."""
    n = rng.standard_normal((_TEXTURE_GRID, _TEXTURE_GRID)).astype(np.float32)
    band = ndimage.gaussian_filter(n, sigmas[0]) - ndimage.gaussian_filter(n, sigmas[1])
    band /= band.std() + 1e-6
    return upsample(band, size)


def upsample(a: np.ndarray, size: int) -> np.ndarray:
    """Bicubic resize of a square array to ``size`` x ``size``."""
    import cv2

    if a.shape[0] == size:
        return a
    return cv2.resize(a, (size, size), interpolation=cv2.INTER_CUBIC)


@dataclass
class Rendered:
    """Intermediate layers a finding may modify before the final exposure mapping."""

    grid: Grid
    density: np.ndarray  # projected density without findings or lung markings
    lung_soft: dict[str, np.ndarray]  # per side ("right"/"left") soft lung field (heart removed)
    lung_sdf: dict[str, np.ndarray]
    air: np.ndarray  # the negative density the aerated lungs contribute (positive numbers)
    vessels: np.ndarray  # lung markings density (added at the end, so findings can erase it)
    heart_soft: np.ndarray
    medi_soft: np.ndarray  # heart plus upper mediastinum


def render_normal(anat: Anatomy, grid: Grid, rng: np.random.Generator) -> Rendered:
    """Project the normal chest into a density map (before findings and exposure)."""
    x, y, px = grid.x, grid.y, grid.px
    ax = np.abs(x)

    # Body: neck, sloping shoulders, then the chest wall; rounded cross-section (thicker centrally).
    neck = anat.neck_half_width
    chest = max(anat.right.x_lateral, anat.left.x_lateral) + anat.chest_wall
    half = chest + (1.15 - chest) * smoothstep(-0.3, -0.65, y)  # arms and axillae beside the upper chest
    half = half * (1.0 - 0.05 * smoothstep(0.3, 1.0, y))
    shoulder_line = anat.shoulder_y - 0.1 + 0.3 * np.clip((ax - neck) / (1.0 - neck), 0.0, 1.0) ** 0.8
    top = np.maximum(smoothstep(neck + 2 * px, neck - 2 * px, ax), smoothstep(shoulder_line - 0.02, shoulder_line + 0.02, y))
    body_t = np.sqrt(np.clip(1.0 - (x / half) ** 2, 0.0, 1.0))
    neck_t = np.sqrt(np.clip(1.0 - (x / neck) ** 2, 0.0, 1.0))
    body_t = np.maximum(body_t * smoothstep(shoulder_line - 0.02, shoulder_line + 0.12, y), neck_t * (y < -0.6))
    body_mask = top * smoothstep(half + 2 * px, half - 2 * px, ax)
    density = (0.25 + 0.67 * body_t**0.8) * body_mask

    heart_soft = anat.heart.soft(x, y, px)
    # The heart sits on the diaphragm: below the domes it merges with the abdomen.
    dia = np.where(x < 0, anat.right.diaphragm(x), anat.left.diaphragm(x))
    heart_soft = heart_soft * smoothstep(dia + 0.03, dia - 0.01, y)
    # Mediastinum (great vessels, SVC on the right, aortic knob on the left, IVC and spine below) joins the heart.
    knob_y = anat.left.y_apex + 0.42
    right_border = anat.mediastinum[0] + 0.02 * smoothstep(knob_y, anat.heart.cy, y)
    left_border = anat.mediastinum[1] + anat.left.knob * np.exp(-(((y - knob_y) / 0.09) ** 2))
    band = smoothstep(-right_border - px, -right_border + px, x) * smoothstep(left_border + px, left_border - px, x)
    medi_soft = np.maximum(heart_soft, band)

    lung_soft, lung_sdf = {}, {}
    air = np.zeros_like(x)
    for side, lung in (("right", anat.right), ("left", anat.left)):
        d = lung.sdf(x, y)
        soft = smoothstep(-px, px, d) * (1.0 - medi_soft)
        depth = np.clip(d / 0.16, 0.0, 1.0) ** 0.7
        air += anat.lung_air * soft * (0.5 + 0.5 * depth)
        lung_soft[side], lung_sdf[side] = soft, d
    density = density - air

    # Trachea and main bronchi: a lucent column over the upper mediastinum.
    carina = anat.right.y_apex + 0.55
    trachea = smoothstep(0.055, 0.035, np.abs(x - 0.01 * (y + 1))) * smoothstep(carina + 0.04, carina - 0.04, y)
    trachea *= smoothstep(-1.05, -0.9, y)
    density -= 0.22 * trachea

    # Gastric air bubble under the left hemidiaphragm (image right).
    gx, gy = anat.left.x_dome + 0.05, float(anat.left.y_dome) + 0.16
    bubble = smoothstep(1.0, 0.7, np.sqrt(((x - gx) / 0.13) ** 2 + ((y - gy) / 0.07) ** 2))
    density -= 0.25 * bubble * (y > gy - 0.07 + 0.0)

    # Breast shadows over the lower zones.
    if anat.breast > 0:
        for s in (-1, 1):
            r = np.sqrt(((x - s * 0.5) / 0.42) ** 2 + ((y - 0.42) / 0.3) ** 2)
            density += anat.breast * smoothstep(1.0, 0.6, r) * smoothstep(0.15, 0.35, y)

    bones = _bones(anat, grid, rng)
    density += anat.bone_amp * bones * body_mask

    vessels = _lung_markings(anat, grid, rng, lung_soft)
    return Rendered(grid, density.astype(np.float32), lung_soft, lung_sdf, air, vessels, heart_soft, medi_soft)


def _half(x: np.ndarray, sign: float) -> slice:
    """Columns that hold any pixel on one side of the (rotated) midline, with a small margin."""
    cols = np.flatnonzero((sign * x > -0.03).any(axis=0))
    return slice(int(cols[0]), int(cols[-1]) + 1) if cols.size else slice(0, 0)


def _bones(anat: Anatomy, grid: Grid, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros_like(grid.x)

    # Spine: a dense column with vertebral bodies separated by lucent disc spaces.
    cols = np.flatnonzero((np.abs(grid.x) < 0.15).any(axis=0))
    sl = slice(int(cols[0]), int(cols[-1]) + 1)
    x, y = grid.x[:, sl], grid.y[:, sl]
    ax = np.abs(x)
    sw = anat.spine_half_width * (0.9 + 0.25 * smoothstep(-0.6, 0.8, y))
    column = smoothstep(sw + 0.012, sw - 0.012, ax)
    period = 0.118 + 0.02 * smoothstep(-1, 1, y)
    phase = (y + 1.0) / period + anat.rib_start
    disc = smoothstep(0.8, 0.95, np.abs(np.sin(np.pi * phase)))
    pedicle = np.exp(-(((ax - 0.72 * sw) / (0.18 * sw)) ** 2) - ((np.cos(np.pi * phase) / 0.5) ** 2))
    spinous = np.exp(-((x / (0.25 * sw)) ** 2)) * (np.cos(np.pi * phase) ** 8)
    out[:, sl] += column * (0.10 - 0.035 * disc + 0.06 * pedicle + 0.05 * spinous)

    rib_jitter = rng.uniform(-0.06, 0.06, 12).astype(np.float32)
    for sign, lung in ((-1, anat.right), (1, anat.left)):
        sl = _half(grid.x, sign)
        x, y = grid.x[:, sl], grid.y[:, sl]
        xm = sign * x
        side = (xm > 0).astype(np.float32)
        # Posterior ribs: bands that leave the spine, rise slightly, then sweep down laterally.
        s = np.clip((xm - 0.06) / (lung.x_lateral + 0.1), 0.0, 1.3)
        curve = -0.12 * s + anat.rib_tilt * 2.4 * s**2.4
        k = (y - curve - anat.rib_start) / anat.rib_spacing
        k = k - 0.012 * k**2  # lower ribs are spaced a little wider apart
        k0 = np.floor(k)
        frac = k - k0 - rib_jitter[np.clip(k0, 0, 11).astype(np.intp)]
        band = smoothstep(0.0, 0.05, frac) * smoothstep(0.38, 0.33, frac)
        cortex = np.clip(np.abs(frac - 0.19) / 0.19, 0, 1) ** 6
        valid = (k > 0.0) & (k < 10.0)
        lateral_fade = smoothstep(lung.x_lateral + 0.14, lung.x_lateral + 0.07, xm)
        dia = lung.diaphragm(x)
        below = smoothstep(dia + 0.12, dia - 0.02, y)
        keep = lateral_fade * below * side
        ribs = band * (0.09 + 0.08 * cortex) * valid * smoothstep(0.05, 0.12, xm)

        # Anterior ribs: fainter bands running down and medially from the lateral chest wall.
        ka = (y - 0.42 * np.clip(1.0 - s, 0.0, None) ** 1.6 - anat.rib_start - 0.05) / (anat.rib_spacing * 1.2)
        fa = ka - np.floor(ka)
        band_a = smoothstep(0.0, 0.08, fa) * smoothstep(0.42, 0.34, fa)
        ribs += band_a * 0.05 * ((ka > 0.3) & (ka < 6.5)) * smoothstep(0.25, 0.4, xm)

        # Clavicle: an S-shaped dense band from the sternal notch to the shoulder.
        cs = np.clip((xm - 0.05) / 0.7, 0.0, 1.0)
        dist = np.abs(y - (lung.y_apex + 0.1 - 0.12 * cs + 0.035 * np.sin(2 * np.pi * cs)))
        clav = smoothstep(0.045, 0.030, dist) * smoothstep(0.04, 0.09, xm) * smoothstep(0.82, 0.74, xm)
        clav *= 0.7 + 0.3 * np.clip(dist / 0.035, 0, 1) ** 4

        # Humeral head and the lateral border of the scapula near the shoulder.
        rh = np.sqrt((xm - (lung.x_lateral + 0.3)) ** 2 + (y - (lung.y_apex + 0.06)) ** 2)
        humerus = smoothstep(0.17, 0.15, rh) * (0.8 + 0.2 * np.clip(rh / 0.16, 0, 1) ** 6)
        scap = smoothstep(0.035, 0.0, np.abs(xm - (lung.x_lateral - 0.06 + 0.18 * (y - lung.y_apex))))
        scap *= smoothstep(lung.y_apex, lung.y_apex + 0.15, y) * smoothstep(lung.y_apex + 0.75, lung.y_apex + 0.55, y)
        out[:, sl] += ribs * keep + (0.26 * clav + 0.2 * humerus + 0.05 * scap) * side
    return out


def _lung_markings(anat: Anatomy, grid: Grid, rng: np.random.Generator,
                   lung_soft: dict[str, np.ndarray]) -> np.ndarray:
    """Vascular markings that radiate from each hilum, tapering and fading towards the periphery.

    A smooth noise field sampled in polar coordinates about the hilum (fast across angle, slow along
    the radius) has zero-crossing contours that run outwards and merge like branching vessels.
    """
    import cv2  # fast bilinear sampling of the polar noise field

    out = np.zeros_like(grid.x)
    warp = texture(rng, grid.size, (4.0, 14.0))
    for side, lung in (("right", anat.right), ("left", anat.left)):
        rows = np.flatnonzero(lung_soft[side].any(axis=1))
        cols = np.flatnonzero(lung_soft[side].any(axis=0))
        if rows.size == 0:
            continue
        box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
        x, y, soft = grid.x[box], grid.y[box], lung_soft[side][box]
        hy = lung.y_apex + 0.62 * (lung.y_cp - lung.y_apex)
        dx, dy = lung.sign * x - 0.17, y - hy
        r = np.sqrt(dx**2 + dy**2)
        # Smooth sideways displacement so the vessels meander instead of running dead straight.
        theta = np.arctan2(dy, dx) + 0.01 * warp[box] / (r + 0.08)
        vessels = np.zeros_like(x)
        # (angular smoothing, radial cycles per unit, line width, weight): many fine vessels + a few big ones.
        for ang_sigma, radial, width, amp in ((1.2, 4.0, 0.3, 0.5), (3.0, 2.5, 0.3, 0.9)):
            noise = rng.standard_normal((128, 64)).astype(np.float32)
            noise = ndimage.gaussian_filter(noise, (ang_sigma, 1.0), mode="wrap")
            noise /= noise.std() + 1e-6
            map_x = (r * radial).astype(np.float32)  # noise columns: radius (slow: lines run outwards)
            map_y = ((theta / (2 * np.pi) + 0.5) * 128.0).astype(np.float32)  # noise rows: angle
            field_ = cv2.remap(noise, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
            taper = 0.4 + 0.06 / (r + 0.06)  # vessels thin out towards the periphery
            vessels += amp * np.exp(-((field_ / (width * taper)) ** 2)) * np.exp(-r / 0.45)
        hilum = np.exp(-(((lung.sign * x - 0.16) / 0.07) ** 2) - (((y - hy) / 0.16) ** 2))
        out[box] += soft * (anat.vessel_amp * vessels + anat.hilum_amp * hilum)
    return out


def expose(density: np.ndarray, anat: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Map projected density to a displayed radiograph (bright = dense) with noise and gamma."""
    img = 1.0 - np.exp(-anat.exposure * np.clip(density, 0.0, None))
    top = 1.0 - np.exp(-anat.exposure * 1.9)
    img = np.clip(img / top, 0.0, 1.0) ** anat.gamma
    img = ndimage.gaussian_filter(img, 0.35 * img.shape[0] / 256)  # detector unsharpness, size-independent
    # Quantum mottle, slightly correlated like a real detector.
    noise = rng.standard_normal(img.shape).astype(np.float32)
    noise = ndimage.uniform_filter(noise, 2) * 1.6
    img = img + anat.noise_sigma * noise
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def cardiothoracic_ratio(heart_mask: np.ndarray, lung_mask: np.ndarray) -> float:
    """Cardiothoracic ratio: widest horizontal cardiac extent over the internal thoracic width.

    Args:
        heart_mask: bool HxW cardiac silhouette.
        lung_mask: bool HxW lung fields (their lateral borders bound the thorax).

    Returns:
        The ratio, or ``nan`` if either mask is empty.
    """
    hc = np.flatnonzero(heart_mask.any(axis=0))
    lc = np.flatnonzero(lung_mask.any(axis=0))
    if hc.size == 0 or lc.size == 0:
        return float("nan")
    return float((hc[-1] - hc[0] + 1) / (lc[-1] - lc[0] + 1))
