"""Write the bundled demo studies (synthetic chest phantoms) to models/samples/.

The files cover the ingest paths a presentation shows: 8-bit PNG, JPEG, and DICOM with a Modality
LUT, MONOCHROME1 and compressed pixel data. A manifest.json lists each file with its ground-truth
labels, laterality and report. Output is deterministic: re-running rewrites identical files.

Usage:
    python -m training.make_samples [--out models/samples] [--size 512]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pydicom.uid as uid

from medsight.synthetic import FIELD_OF_VIEW_CM, generate_phantom, write_jpeg, write_png
from medsight.synthetic.dicom import available_compressed_syntaxes, write_dicom

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "models" / "samples"

# Seeds picked so each finding is clearly visible at presentation size.
SAMPLES = [
    {"file": "normal_pa.png", "seed": 101, "findings": (), "format": "png"},
    {"file": "consolidation_right_pa.png", "seed": 3, "findings": ("consolidation",), "format": "png"},
    {"file": "effusion_left_pa.dcm", "seed": 14, "findings": ("effusion",), "format": "dicom",
     "dicom": {"modality": "CR", "bits_stored": 12, "photometric": "MONOCHROME2", "rescale_slope": 1.0,
               "rescale_intercept": -1024.0, "windows": ((1023.5, 4096.0), (700.0, 1800.0)),
               "window_explanations": ("FULL", "SOFT TISSUE")}},
    {"file": "pneumothorax_pa_mono1.dcm", "seed": 5, "findings": ("pneumothorax",), "format": "dicom",
     "dicom": {"modality": "DX", "bits_stored": 16, "photometric": "MONOCHROME1",
               "transfer_syntax": uid.JPEGLSLossless}},
    {"file": "nodule_pa.jpg", "seed": 6, "findings": ("nodule",), "format": "jpeg"},
    {"file": "cardiomegaly_pa.dcm", "seed": 6, "findings": ("cardiomegaly",), "format": "dicom",
     "dicom": {"modality": "DX", "bits_stored": 12, "photometric": "MONOCHROME2",
               "rescale_slope": 2.0, "rescale_intercept": 0.0, "transfer_syntax": uid.RLELossless}},
]


def make_samples(out: Path, size: int = 512) -> list[dict]:
    """Generate the sample studies and their manifest.

    Args:
        out: output folder (created).
        size: image size in pixels.

    Returns:
        The manifest entries.
    """
    out.mkdir(parents=True, exist_ok=True)
    spacing = round(FIELD_OF_VIEW_CM * 10.0 / size, 4)
    manifest = []
    for spec in SAMPLES:
        p = generate_phantom(spec["seed"], size=size, findings=spec["findings"])
        path = out / spec["file"]
        entry = {
            "file": spec["file"],
            "format": spec["format"],
            "seed": p.seed,
            "size": size,
            "labels": list(p.labels),
            "laterality": p.laterality,
            "report": p.report,
            "details": p.details,
            "synthetic": True,
            "description": "synthetic phantom",
        }
        if spec["format"] == "png":
            write_png(p, path, bits=8)
        elif spec["format"] == "jpeg":
            write_jpeg(p, path, quality=90)
        else:
            kwargs = dict(spec["dicom"])
            ts = kwargs.get("transfer_syntax", uid.ExplicitVRLittleEndian)
            if ts not in (uid.ExplicitVRLittleEndian,) and ts not in available_compressed_syntaxes():
                kwargs["transfer_syntax"] = uid.RLELossless  # encoder plugin missing: RLE always works
            write_dicom(p, path, pixel_spacing=(spacing, spacing), patient_id=f"SYN-{p.seed:04d}", **kwargs)
            entry["dicom"] = {k: (str(v) if k == "transfer_syntax" else v) for k, v in kwargs.items()}
            entry["dicom"]["pixel_spacing_mm"] = spacing
        entry["bytes"] = path.stat().st_size
        manifest.append(entry)
    (out / "manifest.json").write_text(json.dumps({"description": "synthetic phantom demo studies (not patient "
                                                   "images)", "studies": manifest}, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: models/samples)")
    parser.add_argument("--size", type=int, default=512, help="image size in pixels (default: 512)")
    args = parser.parse_args(argv)
    manifest = make_samples(args.out, args.size)
    total = sum(e["bytes"] for e in manifest)
    for e in manifest:
        print(f"{e['file']:32s} {e['bytes'] / 1024:7.1f} KiB  {', '.join(e['labels']) or 'normal'}")
    print(f"total {total / 1024:.1f} KiB in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
