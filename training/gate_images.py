"""Test pictures for the input gate: realistic variants of a real chest film and non-chest images.

Everything is made here from data that ships with the installed packages (pydicom's real CR chest
film RG1, scikit-image's sample pictures) or drawn from scratch, so the evaluation and the tests
run offline. Encoders return file bytes that go through ``medsight.ingest.load_study`` exactly as
an upload would.
"""

from __future__ import annotations

import io
from typing import Callable, Iterator

import numpy as np

REAL_CHEST_FILES = ("RG1_UNCI.dcm", "RG1_UNCR.dcm", "RG1_J2KI.dcm", "RG1_J2KR.dcm")


# ------------------------------------------------------------------ encoders


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] float image → 8-bit grey (values outside are clipped)."""
    return np.round(np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """PNG bytes of a [0, 1] grey image (8 bit) or of an 8-bit HxWx3 RGB array."""
    from PIL import Image

    arr = image if image.dtype == np.uint8 else to_uint8(image)
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")
    return out.getvalue()


def jpeg_bytes(image: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of a [0, 1] grey image or an 8-bit RGB array."""
    from PIL import Image

    arr = image if image.dtype == np.uint8 else to_uint8(image)
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="JPEG", quality=int(quality))
    return out.getvalue()


def dicom_bytes(image: np.ndarray, **header: object) -> bytes:
    """A DICOM file of a [0, 1] image through the synthetic writer, with header keywords overridden.

    ``header`` keywords that the writer takes (modality, photometric, view_position, n_frames,
    bits_stored ...) are passed to it; any other keyword is set on the dataset (e.g.
    ``BodyPartExamined="HAND"``, ``PatientOrientation=["A", "F"]``).
    """
    import inspect
    import tempfile
    from pathlib import Path

    import pydicom

    from medsight.synthetic.dicom import write_dicom

    accepted = set(inspect.signature(write_dicom).parameters)
    writer_args = {k: v for k, v in header.items() if k in accepted}
    extra = {k: v for k, v in header.items() if k not in accepted}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "image.dcm"
        write_dicom(np.asarray(image, dtype=np.float32), path, **writer_args)
        if extra:
            ds = pydicom.dcmread(path)
            for keyword, value in extra.items():
                setattr(ds, keyword, value)
            ds.save_as(path)
        return path.read_bytes()


# ------------------------------------------------------------------ the real film and its variants


def real_chest_image() -> np.ndarray:
    """The display image of pydicom's real adult CR chest film (RG1, 1955 x 1841, MONOCHROME1)."""
    from pydicom.data import get_testdata_file

    from medsight.ingest import load_study

    return load_study(get_testdata_file(REAL_CHEST_FILES[0])).image


def _resize(image: np.ndarray, long_side: int) -> np.ndarray:
    import cv2

    h, w = image.shape
    scale = long_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    import cv2

    h, w = image.shape
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0)


def burn_in_text(image: np.ndarray, marker: str = "L") -> np.ndarray:
    """A copy with burned-in text (corner annotations, as on exported films) and an L/R marker."""
    import cv2

    out = to_uint8(image)
    h, w = out.shape
    scale = max(h, w) / 1000.0
    thick = max(1, round(2 * scale))
    for i, line in enumerate(("PORTABLE AP  SUPINE", "kVp 90  mAs 3.2", "2019-04-12 03:14")):
        cv2.putText(out, line, (round(20 * scale), round((40 + 35 * i) * scale)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.9 * scale, 255, thick, cv2.LINE_AA)
    cv2.putText(out, "ACC 12345678", (round(w - 330 * scale), round(h - 30 * scale)), cv2.FONT_HERSHEY_SIMPLEX,
                0.9 * scale, 255, thick, cv2.LINE_AA)
    # A lead marker: bright letter on a dark square, top outer corner.
    x0, y0, side = round(w - 140 * scale), round(60 * scale), round(80 * scale)
    out[y0 : y0 + side, x0 : x0 + side] = 12
    cv2.putText(out, marker, (x0 + round(15 * scale), y0 + round(65 * scale)), cv2.FONT_HERSHEY_DUPLEX,
                2.2 * scale, 255, max(2, round(4 * scale)), cv2.LINE_AA)
    return out.astype(np.float32) / 255.0


def collimate(image: np.ndarray, fraction: float = 0.08, level: float = 1.0) -> np.ndarray:
    """A copy with collimation borders of ``level`` covering ``fraction`` of each side."""
    out = np.array(image, dtype=np.float32, copy=True)
    h, w = out.shape
    dy, dx = round(h * fraction), round(w * fraction)
    out[:dy] = level
    out[-dy:] = level
    out[:, :dx] = level
    out[:, -dx:] = level
    return out


def wide_field(image: np.ndarray, film_fraction: float = 0.85, width_factor: float = 1.4, seed: int = 0) -> np.ndarray:
    """The film smaller in a wider frame with noisy air around and the abdomen running off the
    bottom, as in a paediatric or portable film taken on an oversized detector."""
    rng = _rng(seed)
    h, w = image.shape
    canvas = np.clip(0.06 + rng.normal(0, 0.02, (int(h * 1.35), int(w * width_factor))), 0, 1).astype(np.float32)
    small = _resize(image, int(max(h, w) * film_fraction))
    sh, sw = small.shape
    y0, x0 = int(canvas.shape[0] * 0.05), (canvas.shape[1] - sw) // 2
    canvas[y0 : y0 + sh, x0 : x0 + sw] = small
    canvas[y0 + sh :, x0 : x0 + sw] = small[-1][None, :] * 0.95
    return canvas


def real_chest_variants() -> Iterator[tuple[str, bytes]]:
    """(name, file bytes) of realistic re-exports of the real film RG1."""
    from pydicom.data import get_testdata_file

    import pydicom

    film = real_chest_image()
    h, w = film.shape
    small = _resize(film, 1024)
    for quality in (95, 85, 70, 50, 30):
        yield f"jpeg_q{quality}_1k", jpeg_bytes(small, quality)
    yield "jpeg_q90_full", jpeg_bytes(film, 90)
    yield "png8_1k", png_bytes(small)
    yield "png8_2k", png_bytes(_resize(film, 2048))
    yield "png8_512", png_bytes(_resize(film, 512))
    yield "png8_2500_upscaled", png_bytes(_resize(film, 2500))
    yield "jpeg_collimation_white", jpeg_bytes(collimate(small, 0.08, 1.0), 90)
    yield "jpeg_collimation_grey", jpeg_bytes(collimate(small, 0.12, 0.8), 90)
    yield "png_letterbox_black", png_bytes(np.pad(small, ((0, 0), (200, 200))))
    yield "jpeg_text_markers", jpeg_bytes(burn_in_text(small, "L"), 90)
    yield "png_text_markers_R", png_bytes(burn_in_text(small, "R"))
    yield "jpeg_ap_tight_crop", jpeg_bytes(small[round(0.08 * 1024) : round(0.80 * 1024), 90:-90], 90)
    yield "jpeg_crop_top_heavy", jpeg_bytes(small[: round(0.72 * small.shape[0])], 90)
    for degrees in (-10, -5, 5, 10):
        yield f"jpeg_rotated_{degrees:+d}", jpeg_bytes(_rotate(small, degrees), 90)
    for gamma in (0.6, 0.8, 1.25, 1.6):
        yield f"png_gamma_{gamma}", png_bytes(np.clip(small, 0, 1) ** gamma)
    yield "png_low_contrast", png_bytes(0.3 + 0.4 * small)
    yield "png_mirrored", png_bytes(small[:, ::-1])
    yield "jpeg_combo_text_collimation_rot5_q60", jpeg_bytes(
        _rotate(collimate(burn_in_text(small), 0.06, 1.0), 5), 60
    )
    yield "jpeg_wide_field_0.85", jpeg_bytes(wide_field(small, 0.85, 1.4), 90)
    yield "jpeg_wide_field_0.9", jpeg_bytes(wide_field(small, 0.9, 1.2, seed=1), 90)
    yield "jpeg_wide_field_0.7", jpeg_bytes(wide_field(small, 0.7, 1.6, seed=2), 90)
    yield "png_landscape_padded", png_bytes(np.pad(_resize(film, 800), ((0, 0), (300, 300)), constant_values=0.0))
    # DICOM copies of the original pixels: MONOCHROME2 (inverted stored values) and a re-written
    # MONOCHROME1 file with no window (automatic window path).
    ds = pydicom.dcmread(get_testdata_file(REAL_CHEST_FILES[0]))
    stored = ds.pixel_array
    top = (1 << int(ds.BitsStored)) - 1
    for photometric in ("MONOCHROME2", "MONOCHROME1"):
        copy = pydicom.dcmread(get_testdata_file(REAL_CHEST_FILES[0]))
        values = (top - stored) if photometric == "MONOCHROME2" else stored
        copy.PixelData = values.astype(stored.dtype).tobytes()
        copy.PhotometricInterpretation = photometric
        for keyword in ("WindowCenter", "WindowWidth", "VOILUTSequence"):
            if keyword in copy:
                delattr(copy, keyword)
        out = io.BytesIO()
        copy.save_as(out)
        yield f"dicom_{photometric.lower()}_copy", out.getvalue()
    yield "dicom_dx_8bit_from_export", dicom_bytes(small, modality="DX", bits_stored=8, view_position="AP")


# ------------------------------------------------------------------ phantoms


def phantom_cases() -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of synthetic chest phantoms of several sizes, findings and file formats."""
    from medsight.synthetic import FINDINGS, generate_phantom

    cases = [((), 256), ((), 512), ((), 1024)] + [((f,), size) for f in FINDINGS for size in (256, 512)]
    for i, (findings, size) in enumerate(cases):
        image = generate_phantom(500 + i, size, findings).image
        label = "+".join(findings) or "normal"
        yield f"{label}_{size}_png", png_bytes(image)
        yield f"{label}_{size}_jpeg", jpeg_bytes(image, 80)
        yield f"{label}_{size}_dicom", dicom_bytes(image, modality="CR")


# ------------------------------------------------------------------ non-chest pictures drawn here


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def text_page(seed: int = 0, size: tuple[int, int] = (1100, 850)) -> np.ndarray:
    """A scanned-document-like page: dark text lines on a light, slightly noisy background."""
    import cv2

    rng = _rng(seed)
    page = np.full(size, 237, np.uint8)
    words = ["Patient", "history", "report", "chest", "clinical", "findings", "the", "of", "and", "normal"]
    y = 80
    while y < size[0] - 60:
        line = " ".join(rng.choice(words, size=rng.integers(5, 10)))
        cv2.putText(page, line, (60, y), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 25, 2, cv2.LINE_AA)
        y += int(rng.integers(34, 44))
    return np.clip(page.astype(np.float32) / 255.0 + rng.normal(0, 0.02, size).astype(np.float32), 0, 1)


def gradient(kind: str = "linear", size: int = 768) -> np.ndarray:
    """A linear or radial grey gradient."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    if kind == "radial":
        return np.clip(1.0 - np.hypot(x - 0.5, y - 0.5) * 1.4, 0, 1)
    return x * 0.7 + y * 0.3


def noise(kind: str = "uniform", size: int = 768, seed: int = 0) -> np.ndarray:
    """Uniform noise, or smoothed (cloud-like) noise."""
    import cv2

    rng = _rng(seed)
    base = rng.random((size, size), dtype=np.float32)
    if kind == "smooth":
        base = cv2.GaussianBlur(base, (0, 0), 25)
        base = (base - base.min()) / (base.max() - base.min())
    return base


def shapes(seed: int = 0, size: int = 768) -> np.ndarray:
    """Random rectangles and circles on a grey background (drawings, diagrams)."""
    import cv2

    rng = _rng(seed)
    img = np.full((size, size), 0.5, np.float32)
    for _ in range(12):
        value = float(rng.random())
        if rng.random() < 0.5:
            p, q = rng.integers(0, size, 2), rng.integers(0, size, 2)
            cv2.rectangle(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), value, -1)
        else:
            c = rng.integers(0, size, 2)
            cv2.circle(img, (int(c[0]), int(c[1])), int(rng.integers(20, size // 4)), value, -1)
    return np.clip(img + rng.normal(0, 0.01, img.shape).astype(np.float32), 0, 1)


def _film_finish(img: np.ndarray, seed: int) -> np.ndarray:
    import cv2

    rng = _rng(seed)
    img = cv2.GaussianBlur(img, (0, 0), 2.0)
    return np.clip(img + rng.normal(0, 0.02, img.shape).astype(np.float32), 0, 1)


def hand_film(seed: int = 0, size: tuple[int, int] = (1000, 800)) -> np.ndarray:
    """A synthetic PA hand radiograph: soft-tissue hand and brighter bones on a dark background."""
    import cv2

    rng = _rng(seed)
    h, w = size
    img = np.full(size, 0.08, np.float32)
    soft = np.zeros(size, np.float32)
    bone = np.zeros(size, np.float32)
    cx = w // 2 + int(rng.integers(-40, 40))
    cv2.ellipse(soft, (cx, int(h * 0.68)), (int(w * 0.24), int(h * 0.2)), 0, 0, 360, 1.0, -1)  # palm
    cv2.rectangle(soft, (cx - int(w * 0.17), int(h * 0.8)), (cx + int(w * 0.17), h), 1.0, -1)  # wrist
    for i, angle in enumerate((-38, -14, -3, 8, 20)):
        length = int(h * (0.28 if i == 0 else 0.42 - abs(i - 2.4) * 0.04))
        base = (cx + int((i - 2) * w * 0.09), int(h * 0.55 if i else h * 0.66))
        tip = (int(base[0] + length * np.sin(np.radians(angle))), int(base[1] - length * np.cos(np.radians(angle))))
        cv2.line(soft, base, tip, 1.0, int(w * 0.07))
        cv2.line(bone, base, tip, 1.0, int(w * 0.03))
    for i in range(5):  # metacarpals
        x = cx + int((i - 2) * w * 0.07)
        cv2.line(bone, (x, int(h * 0.6)), (cx + int((i - 2) * w * 0.03), int(h * 0.82)), 1.0, int(w * 0.03))
    img = img + 0.35 * cv2.GaussianBlur(soft, (0, 0), 4) + 0.45 * bone
    return _film_finish(img, seed)


def knee_film(seed: int = 0, size: tuple[int, int] = (1000, 800)) -> np.ndarray:
    """A synthetic AP knee radiograph: femur above, tibia and fibula below, soft tissue around."""
    import cv2

    rng = _rng(seed)
    h, w = size
    img = np.full(size, 0.08, np.float32)
    soft = np.zeros(size, np.float32)
    bone = np.zeros(size, np.float32)
    cx = w // 2 + int(rng.integers(-30, 30))
    cv2.rectangle(soft, (cx - int(w * 0.25), 0), (cx + int(w * 0.25), h), 1.0, -1)
    cv2.rectangle(bone, (cx - int(w * 0.08), 0), (cx + int(w * 0.08), int(h * 0.42)), 1.0, -1)  # femur shaft
    cv2.ellipse(bone, (cx, int(h * 0.45)), (int(w * 0.17), int(h * 0.07)), 0, 0, 360, 1.0, -1)  # condyles
    cv2.ellipse(bone, (cx, int(h * 0.56)), (int(w * 0.16), int(h * 0.05)), 0, 0, 360, 1.0, -1)  # tibial plateau
    cv2.rectangle(bone, (cx - int(w * 0.07), int(h * 0.56)), (cx + int(w * 0.07), h), 1.0, -1)  # tibia
    cv2.rectangle(bone, (cx + int(w * 0.11), int(h * 0.6)), (cx + int(w * 0.14), h), 0.8, -1)  # fibula
    img = img + 0.3 * cv2.GaussianBlur(soft, (0, 0), 8) + 0.45 * cv2.GaussianBlur(bone, (0, 0), 2)
    return _film_finish(img, seed)


def ct_like_slice(seed: int = 0, size: int = 512) -> np.ndarray:
    """A synthetic axial chest CT slice: round body on black with two dark lungs, spine and table."""
    import cv2

    rng = _rng(seed)
    img = np.zeros((size, size), np.float32)
    c = size // 2
    cv2.ellipse(img, (c, c), (int(size * 0.4), int(size * 0.3)), 0, 0, 360, 0.55, -1)
    for side in (-1, 1):
        lung_centre = (c + side * int(size * 0.17), c - 10)
        cv2.ellipse(img, lung_centre, (int(size * 0.12), int(size * 0.2)), 0, 0, 360, 0.08, -1)
    cv2.circle(img, (c, c + int(size * 0.2)), int(size * 0.05), 0.95, -1)  # vertebra
    cv2.circle(img, (c, c), int(size * 0.07), 0.6, -1)  # heart
    cv2.rectangle(img, (int(size * 0.08), int(size * 0.86)), (int(size * 0.92), int(size * 0.89)), 0.7, -1)  # table
    return np.clip(img + rng.normal(0, 0.015, img.shape).astype(np.float32), 0, 1)


def screenshot(seed: int = 0, with_film: bool = True) -> np.ndarray:
    """A viewer screenshot: flat UI panels, toolbar buttons, text and (optionally) a film in the middle."""
    import cv2

    rng = _rng(seed)
    h, w = 900, 1440
    ui = np.full((h, w), 41, np.uint8)
    ui[:60] = 64  # toolbar
    for i in range(10):
        cv2.rectangle(ui, (20 + i * 70, 12), (70 + i * 70, 48), 115, -1)
    ui[60:, :260] = 51  # side panel
    for i in range(12):
        cv2.putText(ui, f"Series {i + 1}  CR", (20, 110 + 50 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 217, 1, cv2.LINE_AA)
    img = ui.astype(np.float32) / 255.0
    if with_film:
        film = _resize(real_chest_image(), 620)
        fh, fw = film.shape
        img[150 : 150 + fh, 600 : 600 + fw] = film[: h - 150, : w - 600]
    return img


def colour_photo(seed: int = 0, size: tuple[int, int] = (600, 800)) -> np.ndarray:
    """A colourful picture (smooth colour fields), 8-bit RGB."""
    import cv2

    rng = _rng(seed)
    channels = [cv2.GaussianBlur(rng.random(size, dtype=np.float32), (0, 0), 30) for _ in range(3)]
    rgb = np.stack([(c - c.min()) / (c.max() - c.min()) for c in channels], axis=-1)
    return np.round(rgb * 255).astype(np.uint8)


GENERATED_NON_CHEST: dict[str, Callable[[], np.ndarray]] = {
    "text_page": text_page,
    "text_page_2": lambda: text_page(1),
    "gradient_linear": lambda: gradient("linear"),
    "gradient_radial": lambda: gradient("radial"),
    "noise_uniform": lambda: noise("uniform"),
    "noise_smooth": lambda: noise("smooth", seed=1),
    "noise_smooth_2": lambda: noise("smooth", seed=2),
    "shapes": shapes,
    "shapes_2": lambda: shapes(1),
    "hand_film": hand_film,
    "hand_film_2": lambda: hand_film(1),
    "knee_film": knee_film,
    "knee_film_2": lambda: knee_film(1),
    "ct_like_chest_slice": ct_like_slice,
    "screenshot_viewer_with_film": screenshot,
    "screenshot_viewer_empty": lambda: screenshot(1, with_film=False),
    "colour_picture": colour_photo,
}


def skimage_pictures() -> Iterator[tuple[str, np.ndarray]]:
    """(name, array) of scikit-image's bundled sample pictures (grey float or 8-bit RGB)."""
    import skimage.data as data

    for name in (
        "astronaut", "binary_blobs", "brick", "camera", "cat", "cell", "checkerboard", "chelsea", "clock",
        "coffee", "coins", "colorwheel", "grass", "gravel", "horse", "hubble_deep_field",
        "immunohistochemistry", "logo", "microaneurysms", "moon", "page", "retina", "rocket",
        "shepp_logan_phantom", "text",
    ):
        try:
            arr = np.asarray(getattr(data, name)())
        except Exception:  # noqa: BLE001 - a picture needing an optional download is skipped
            continue
        if arr.ndim == 3 and arr.shape[-1] == 4:
            arr = arr[..., :3]
        if arr.ndim == 3:
            arr = arr.astype(np.uint8) if arr.dtype != np.uint8 else arr
        else:
            arr = arr.astype(np.float32)
            span = float(arr.max() - arr.min())
            arr = (arr - arr.min()) / span if span > 0 else np.zeros_like(arr)
        yield name, arr
