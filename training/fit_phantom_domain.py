"""Fit and measure the phantom-domain model that decides when DEMO weights may speak about an image.

    python -m training.fit_phantom_domain [--n-train 1200] [--n-calibrate 400] [--n-test 400]

Phantoms pass through what happens to a study on its way into the product (8-bit export, JPEG at several
qualities, resizing, a small crop, as a screenshot would do), so a re-saved phantom that lost the generator's
marker is still recognised. The threshold is set on a calibration split; acceptance and refusal rates are then
measured on fresh phantoms, the bundled samples, real chest radiographs (pydicom's RG1 film and variants of it)
and non-chest images (every other pydicom test image that loads, scikit-image's samples). Writes
`models/phantom_domain.npz` and its card `models/phantom_domain.card.json` (deterministic for the same seeds).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import time
from datetime import date
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medsight.config import SHIPPED_MODELS_DIR
from medsight.domain import (FEATURE_VERSION, PHANTOM_DOMAIN_FILE, PhantomDomainModel, domain_features)
from medsight.synthetic import dataset_plan, generate_phantom

SIZES = (256, 384, 512, 768)
# Threshold = margin × this percentile of calibration distances: phantoms far out in the tail are rare, and a
# phantom wrongly held outside only hides demo output, while a real film let in would show it.
CAL_PERCENTILE, CAL_MARGIN = 99.5, 1.25


def resaved(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A phantom as it arrives after export: 8 bits, resized, maybe JPEG, maybe cropped a little."""
    from PIL import Image

    im = Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
    h, w = image.shape
    crop = rng.uniform(0, 0.04, size=4)
    im = im.crop((int(crop[0] * w), int(crop[1] * h), w - int(crop[2] * w), h - int(crop[3] * h)))
    side = int(rng.integers(300, 1400))
    im = im.resize((side, int(side * im.height / im.width)), Image.Resampling.BILINEAR)
    if rng.random() < 0.7:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=int(rng.integers(55, 96)))
        im = Image.open(buf)
    return np.asarray(im, dtype=np.float32) / 255.0


def phantom_images(n: int, seed: int, *, augment: bool, desc: str) -> list[np.ndarray]:
    """n phantoms of mixed size and findings; with `augment`, every second one re-saved."""
    rng = np.random.default_rng(seed)
    images = []
    for i, (child, findings) in enumerate(tqdm(dataset_plan(n, seed, 0.5), desc=desc, unit="phantom")):
        image = generate_phantom(child, size=SIZES[i % len(SIZES)], findings=findings).image
        images.append(resaved(image, rng) if augment and i % 2 else image)
    return images


def real_chest_films() -> dict[str, np.ndarray]:
    """pydicom's real adult CR chest film (four encodings) and variants of it a site might send."""
    import pydicom.data
    from PIL import Image, ImageDraw

    from medsight.ingest import load_study

    films = {name: load_study(pydicom.data.get_testdata_file(name)).image
             for name in ("RG1_UNCI.dcm", "RG1_UNCR.dcm", "RG1_J2KI.dcm", "RG1_J2KR.dcm")}
    base = films["RG1_UNCI.dcm"]
    rng = np.random.default_rng(7)
    variants = {
        "crop (AP-like, tighter)": base[150:1750, 150:1800],
        "mirrored": base[:, ::-1],
        "gamma 0.6": base ** 0.6,
        "gamma 1.6": base ** 1.6,
        "resized to 1k": np.asarray(Image.fromarray(np.round(base * 255).astype(np.uint8)).resize((1000, 1058)),
                                    dtype=np.float32) / 255,
        "8-bit JPEG q70 at 1.2k": resaved(base, rng),
        "collimation border": np.pad(base[100:-100, 100:-100], 100, constant_values=0.95),
    }
    marked = Image.fromarray(np.round(base * 255).astype(np.uint8))
    draw = ImageDraw.Draw(marked)
    draw.rectangle((60, 60, 200, 200), fill=255)
    draw.text((80, 1700), "PORTABLE AP  L", fill=255)
    variants["burned-in marker and text"] = np.asarray(marked, dtype=np.float32) / 255
    rotated = Image.fromarray(np.round(base * 255).astype(np.uint8)).rotate(8, fillcolor=0)
    variants["rotated 8°"] = np.asarray(rotated, dtype=np.float32) / 255
    films.update({f"RG1 {k}": v for k, v in variants.items()})
    return films


def non_chest_images() -> dict[str, np.ndarray]:
    """Every other pydicom test image that ingests, and scikit-image's sample images (greyscale)."""
    import warnings

    import pydicom.data
    from skimage import color, data

    from medsight.ingest import IngestError, load_study

    images: dict[str, np.ndarray] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = pydicom.data.get_testdata_files("*")
    for path in sorted(paths):
        name = Path(path).name
        if name.startswith("RG1_") or not name.lower().endswith((".dcm", "")):
            continue
        try:
            study = load_study(path)
        except (IngestError, Exception):  # noqa: BLE001 - non-images and odd files are simply not in the set
            continue
        if min(study.image.shape) < 32:
            continue
        images[f"pydicom {name} ({study.modality or '?'})"] = study.image
    for name in ("camera", "moon", "page", "text", "coins", "brick", "grass", "gravel", "clock", "horse",
                 "astronaut", "coffee", "chelsea", "rocket", "retina", "hubble_deep_field", "immunohistochemistry",
                 "shepp_logan_phantom", "checkerboard", "logo"):
        try:
            img = getattr(data, name)()
        except Exception:  # noqa: BLE001 - a sample that needs a download is skipped
            continue
        img = np.asarray(img, dtype=np.float32)
        if img.ndim == 3:
            img = color.rgb2gray(img[..., :3] / (255.0 if img.max() > 1 else 1.0))
        images[f"skimage {name}"] = img.astype(np.float32)
    return images


def bundled_samples() -> dict[str, np.ndarray]:
    from medsight.ingest import load_study

    folder = SHIPPED_MODELS_DIR / "samples"
    return {p.name: load_study(p).image for p in sorted(folder.iterdir()) if p.suffix in (".png", ".jpg", ".dcm")}


def _rate(distances: dict[str, float], threshold: float, inside: bool) -> dict:
    hits = [k for k, d in distances.items() if (d <= threshold) == inside]
    return {"n": len(distances), "rate": round(len(hits) / max(len(distances), 1), 4),
            "min": round(min(distances.values()), 1), "max": round(max(distances.values()), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.fit_phantom_domain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=1200)
    parser.add_argument("--n-calibrate", type=int, default=400)
    parser.add_argument("--n-test", type=int, default=400)
    parser.add_argument("--out", type=Path, default=SHIPPED_MODELS_DIR / PHANTOM_DOMAIN_FILE)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    train = np.stack([domain_features(x) for x in phantom_images(args.n_train, 1001, augment=True, desc="train")])
    calib = np.stack([domain_features(x) for x in phantom_images(args.n_calibrate, 2002, augment=True,
                                                                  desc="calibrate")])
    model = PhantomDomainModel.fit(train, threshold=0.0)
    cal_d = model.distance(calib)
    model.threshold = float(CAL_MARGIN * np.percentile(cal_d, CAL_PERCENTILE))

    test_images = phantom_images(args.n_test, 3003, augment=False, desc="test")
    rng = np.random.default_rng(3003)
    groups = {
        "held-out phantoms": {f"phantom {i}": x for i, x in enumerate(test_images)},
        "held-out phantoms re-saved (8-bit, resized, JPEG, cropped)":
            {f"phantom {i} re-saved": resaved(x, rng) for i, x in enumerate(test_images)},
        "bundled samples": bundled_samples(),
        "real chest radiographs (pydicom RG1 and variants)": real_chest_films(),
        "non-chest images (pydicom, scikit-image)": non_chest_images(),
    }
    figures = {}
    timings = []
    for group, images in groups.items():
        distances = {}
        for key, image in images.items():
            t0 = time.perf_counter()
            distances[key] = float(model.distance(domain_features(image))[0])
            timings.append(time.perf_counter() - t0)
        inside = group.startswith(("held-out", "bundled"))
        figures[group] = _rate(distances, model.threshold, inside) | {"counted_as": "inside" if inside else "outside"}
        print(f"{group}: {figures[group]}")
    out = model.save(args.out)
    card = {
        "name": "Phantom-domain test for DEMO weights",
        "file": out.name,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "feature_version": FEATURE_VERSION,
        "created": date.today().isoformat(),
        "purpose": "Decides whether an image lies inside the domain of the DEMO image models (synthetic chest "
                   "phantoms). Outputs of DEMO weights on an image outside it are withheld.",
        "method": "192 features (Laplacian-of-Gaussian energy at sigma 1, 2, 4 px pooled over a 4x4 grid and "
                  "at sigma 1, 2 over an 8x8 grid, log; 16-bin histogram) of a 256x256 percentile-normalised copy; Mahalanobis distance under a "
                  "Ledoit-Wolf shrunk covariance fitted on phantoms (half of them re-saved as 8-bit/JPEG/resized/"
                  "cropped copies).",
        "training": {"phantoms": args.n_train, "seed": 1001, "sizes": list(SIZES)},
        "threshold": {"value": round(model.threshold, 2), "rule": f"{CAL_MARGIN} x the {CAL_PERCENTILE}th "
                      f"percentile of {args.n_calibrate} calibration phantoms (seed 2002)"},
        "figures": figures,
        "median_ms_per_image": round(1000 * float(np.median(timings)), 2),
        "fit_seconds": round(time.perf_counter() - start, 1),
        "reproduce": "python -m training.fit_phantom_domain",
    }
    card_path = out.with_name("phantom_domain.card.json")
    card_path.write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    print(f"threshold {model.threshold:.1f}; wrote {out} and {card_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
