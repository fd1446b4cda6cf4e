"""Fit the chest-layout prior of the input gate from real lung masks.

The prior is the per-pixel probability that a point of a frontal chest radiograph lies in a lung,
on a 32x32 grid spanning the whole film. It is the mean of the real lung segmentation masks that
ship inside torchxrayvision's wheel (``semantic_masks_v7labs_lungs.zip``: masks drawn on public
COVID-19-era chest radiographs of adults and children, PA and AP, many sizes and crops), so it
carries the real variation of where the lungs sit in a film. Masks that are empty or cover
implausibly little or much of the frame (not a frontal lung annotation) are skipped.

Usage:
    python -m training.fit_gate_layout            # writes models/gate_chest_layout.npz and its card
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "models" / "gate_chest_layout.npz"
GRID = 32
#: A frontal lung annotation covers between these shares of the frame.
MIN_LUNG_FRACTION, MAX_LUNG_FRACTION = 0.05, 0.75
#: Each half of the frame must hold at least this share of the lung pixels (two lungs).
MIN_SIDE_SHARE = 0.2


def masks_zip() -> Path:
    """Path of the lung-mask archive inside the installed torchxrayvision package."""
    import importlib.util

    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or spec.origin is None:
        raise SystemExit("torchxrayvision is not installed (see requirements.txt).")
    return Path(spec.origin).parent / "data" / "semantic_masks_v7labs_lungs.zip"


def load_masks(path: Path) -> tuple[np.ndarray, dict[str, int]]:
    """Usable masks resized to GRID x GRID (area average), and counts of what was skipped."""
    import cv2
    from PIL import Image

    kept: list[np.ndarray] = []
    counts = {"files": 0, "kept": 0, "skipped_area": 0, "skipped_one_side": 0, "unreadable": 0}
    with zipfile.ZipFile(path) as archive:
        for name in sorted(archive.namelist()):
            if name.endswith("/"):
                continue
            counts["files"] += 1
            try:
                mask = np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("L")) > 127
            except Exception:
                counts["unreadable"] += 1
                continue
            if not MIN_LUNG_FRACTION < mask.mean() < MAX_LUNG_FRACTION:
                counts["skipped_area"] += 1
                continue
            half = mask.shape[1] // 2
            left_share = mask[:, :half].sum() / mask.sum()
            if min(left_share, 1.0 - left_share) < MIN_SIDE_SHARE:
                counts["skipped_one_side"] += 1
                continue
            kept.append(cv2.resize(mask.astype(np.float32), (GRID, GRID), interpolation=cv2.INTER_AREA))
            counts["kept"] += 1
    return np.stack(kept), counts


def main(argv: list[str] | None = None) -> dict:
    """Fit and write the prior and its model card; returns the card."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    source = masks_zip()
    masks, counts = load_masks(source)
    prior = masks.mean(axis=0).astype(np.float32)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, lung_prior=prior, n_masks=np.int32(len(masks)))
    card = {
        "name": "gate_chest_layout",
        "file": args.out.name,
        "sha256": hashlib.sha256(args.out.read_bytes()).hexdigest(),
        "what": "Probability that each cell of a 32x32 grid over a frontal chest film lies in a lung; "
        "the input gate compares an image's dark and bright regions with this layout.",
        "training_data": "semantic_masks_v7labs_lungs.zip shipped in torchxrayvision (real lung masks on "
        "public chest radiographs); no patient images are stored, only the mean mask.",
        "masks": counts,
        "fit_command": "python -m training.fit_gate_layout",
        "grid": GRID,
        "lung_fraction_of_frame_mean": round(float(prior.mean()), 4),
        "limitations": "Describes frontal (PA/AP) films only; lateral views and films with the chest "
        "far off-centre do not match it. Measured gate figures: benchmarks/results/gate.json.",
    }
    card_path = args.out.with_suffix("").with_suffix(".card.json")
    if card_path.exists():  # keep the figures python -m training.evaluate_gate recorded
        previous = json.loads(card_path.read_text())
        if "measured" in previous:
            card["measured"] = previous["measured"]
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(counts))
    return card


if __name__ == "__main__":
    main()
