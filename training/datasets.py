"""Dataset readers for anomaly-detector training and evaluation.

Every reader returns a list of `Sample`s (an id, a class label, whether it is normal, and where the
pixels come from); `load_image` turns a sample into the same H×W float [0, 1] greyscale image the app
scores. Files are read through `medsight.ingest.load_study`, so PNG/JPEG/DICOM handling (rescale, VOI
window, MONOCHROME1) is identical to the workstation's.

Supported layouts:
    COVID-19 Radiography Database: root/{Normal,COVID,Lung_Opacity,Viral Pneumonia}/[images/]*.png
    generic class folders:         root/<class>/*.png|jpg|jpeg (class names containing "normal" are normal)
    CSV manifest:                  columns path,label[,is_normal] (paths relative to the CSV)
    folder of DICOMs:              root/**/*.dcm (or files with a DICOM preamble); class = parent folder
    synthetic phantoms:            `phantom_samples(n, seed, size, normal_fraction)` via medsight.synthetic
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
COVID_CLASSES = ("Normal", "COVID", "Lung_Opacity", "Viral Pneumonia")
NORMAL_NAMES = ("normal", "no finding", "no_finding", "healthy", "0", "false")


class DatasetError(ValueError):
    """A dataset folder or manifest cannot be read; the message says why."""


@dataclass(frozen=True)
class Sample:
    """One training/evaluation image.

    Attributes:
        id: stable identifier (relative path, or "phantom-<seed>").
        label: class name ("normal", "COVID", "effusion+nodule", ...).
        is_normal: True for images without findings.
        path: image file, for file-based datasets.
        phantom_seed / phantom_findings / phantom_size: how to regenerate a synthetic phantom.
    """

    id: str
    label: str
    is_normal: bool
    path: str | None = None
    phantom_seed: int | None = None
    phantom_findings: tuple[str, ...] | None = None
    phantom_size: int = 512


def _is_normal_name(name: str, normal_names: Iterable[str] = NORMAL_NAMES) -> bool:
    lowered = name.strip().lower()
    return lowered in {n.lower() for n in normal_names}


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _require_dir(root: str | Path) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"Dataset folder not found: {root}")
    return root


def _check(samples: list[Sample], where: Path) -> list[Sample]:
    if not samples:
        raise DatasetError(f"No images found in {where}.")
    if not any(s.is_normal for s in samples):
        raise DatasetError(f"No normal images found in {where}; the detector is trained on normal studies.")
    return samples


def read_covid_radiography(root: str | Path) -> list[Sample]:
    """COVID-19 Radiography Database layout (Normal / COVID / Lung_Opacity / Viral Pneumonia).

    Each class folder may hold the images directly or in an `images/` subfolder (the Kaggle release).

    Raises:
        DatasetError: missing folder or no normal images.
    """
    root = _require_dir(root)
    samples = []
    for cls in COVID_CLASSES:
        folder = root / cls / "images" if (root / cls / "images").is_dir() else root / cls
        if not folder.is_dir():
            continue
        samples += [Sample(id=str(p.relative_to(root)), label=cls, is_normal=cls == "Normal", path=str(p))
                    for p in _images_in(folder)]
    return _check(samples, root)


def read_class_folders(root: str | Path, normal_names: Sequence[str] = NORMAL_NAMES) -> list[Sample]:
    """Generic `class/*.png` layout; a class is normal when its folder name is in `normal_names`.

    Raises:
        DatasetError: missing folder or no normal images.
    """
    root = _require_dir(root)
    samples = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        normal = _is_normal_name(folder.name, normal_names)
        samples += [Sample(id=str(p.relative_to(root)), label=folder.name, is_normal=normal, path=str(p))
                    for p in _images_in(folder)]
    return _check(samples, root)


def read_csv_manifest(csv_path: str | Path, path_column: str = "path", label_column: str = "label",
                      normal_names: Sequence[str] = NORMAL_NAMES) -> list[Sample]:
    """CSV manifest with an image path and a label per row (optional `is_normal` column overrides).

    Raises:
        DatasetError: missing file/columns, unreadable rows, or missing images.
    """
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise DatasetError(f"Manifest not found: {csv_path}")
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if path_column not in columns or label_column not in columns:
            raise DatasetError(f"{csv_path.name} needs columns '{path_column}' and '{label_column}' (has {columns}).")
        samples = []
        for line, row in enumerate(reader, start=2):
            rel = (row.get(path_column) or "").strip()
            if not rel:
                raise DatasetError(f"{csv_path.name} line {line}: empty path.")
            path = (csv_path.parent / rel) if not Path(rel).is_absolute() else Path(rel)
            if not path.is_file():
                raise DatasetError(f"{csv_path.name} line {line}: image not found: {rel}")
            label = (row.get(label_column) or "").strip()
            flag = (row.get("is_normal") or "").strip().lower()
            normal = flag in ("1", "true", "yes") if flag else _is_normal_name(label, normal_names)
            samples.append(Sample(id=rel, label=label or "unlabelled", is_normal=normal, path=str(path)))
    return _check(samples, csv_path)


def _looks_like_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_dicom_folder(root: str | Path, normal_names: Sequence[str] = NORMAL_NAMES,
                      all_normal: bool = False) -> list[Sample]:
    """Folder (searched recursively) of DICOM files; the class is the parent folder's name.

    Args:
        root: folder to search.
        normal_names: folder names counted as normal.
        all_normal: treat every file as normal (an unlabelled folder of normal studies).

    Raises:
        DatasetError: missing folder, no DICOM files, or no normal images.
    """
    root = _require_dir(root)
    samples = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and _looks_like_dicom(p)):
        label = path.parent.name if path.parent != root else "unlabelled"
        normal = all_normal or _is_normal_name(label, normal_names)
        samples.append(Sample(id=str(path.relative_to(root)), label="normal" if all_normal else label,
                              is_normal=normal, path=str(path)))
    return _check(samples, root)


def phantom_plan(n: int, seed: int = 0, normal_fraction: float = 0.5) -> list[tuple[int, tuple[str, ...]]]:
    """(phantom seed, findings) of `medsight.synthetic.generate_dataset(n, seed, ...)`, without rendering."""
    from medsight.synthetic import dataset_plan

    return dataset_plan(n, seed, normal_fraction)


def phantom_samples(n: int, seed: int = 0, size: int = 512, normal_fraction: float = 0.5) -> list[Sample]:
    """Synthetic phantom samples (rendered lazily by `load_image`)."""
    return [
        Sample(id=f"phantom-{child}-{size}", label="+".join(findings) or "normal", is_normal=not findings,
               phantom_seed=child, phantom_findings=findings, phantom_size=size)
        for child, findings in phantom_plan(n, seed, normal_fraction)
    ]


def load_image(sample: Sample) -> np.ndarray:
    """The sample's greyscale image, H×W float32 in [0, 1] (display convention, air dark).

    Raises:
        DatasetError: when the file cannot be read as a radiograph.
    """
    if sample.phantom_seed is not None:
        from medsight.synthetic import generate_phantom

        return generate_phantom(sample.phantom_seed, size=sample.phantom_size,
                                findings=sample.phantom_findings or ()).image
    if sample.path is None:
        raise DatasetError(f"Sample {sample.id} has neither a file nor a phantom seed.")
    from medsight.ingest import load_study

    try:
        return load_study(sample.path).image
    except ValueError as exc:  # IngestError is a ValueError with a user-facing message
        raise DatasetError(f"{sample.id}: {exc}") from None


def read_dataset(spec: str) -> list[Sample]:
    """Samples from a "<kind>:<path>" spec: covid:, folders:, csv:, dicom: (phantoms are made apart).

    Raises:
        DatasetError: unknown kind or unreadable data.
    """
    kind, _, location = spec.partition(":")
    readers = {"covid": read_covid_radiography, "folders": read_class_folders, "csv": read_csv_manifest,
               "dicom": read_dicom_folder}
    if kind not in readers or not location:
        raise DatasetError(f"Unknown dataset spec {spec!r}; use phantoms or one of "
                           + ", ".join(f"{k}:<path>" for k in readers) + ".")
    return readers[kind](location)


def split_samples(samples: Sequence[Sample], fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
                  seed: int = 0) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Stratified (by label) train/validation/test split, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    by_label: dict[str, list[Sample]] = {}
    for sample in samples:
        by_label.setdefault(sample.label, []).append(sample)
    for label in sorted(by_label):
        group = list(by_label[label])
        order = rng.permutation(len(group))
        n_train = int(round(len(group) * fractions[0]))
        n_val = int(round(len(group) * fractions[1]))
        train += [group[i] for i in order[:n_train]]
        val += [group[i] for i in order[n_train:n_train + n_val]]
        test += [group[i] for i in order[n_train + n_val:]]
    return train, val, test
