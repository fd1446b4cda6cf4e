"""Build or extend the similar-case base.

Sources: the Indiana/OpenI reports shipped inside torchxrayvision (real, text-only cases), synthetic
phantoms with their reports (image + text), a CSV/JSONL manifest (image path, report text, optional labels)
and a MIMIC-CXR-style folder (files/pXX/pNNN/sNNN.txt reports beside sNNN/ image folders).
Work is done in batches; ids already stored are skipped, so an interrupted build resumes where it stopped
and re-running it changes nothing.

Examples:
    python -m medsight.retrieval.build                       # default: all Indiana reports + 200 phantoms
    python -m medsight.retrieval.build --indiana 500 --phantoms 0
    python -m medsight.retrieval.build --manifest cases.csv --no-indiana --phantoms 0
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import re
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from medsight.config import Settings, get_settings
from medsight.retrieval.casebase import AddStats, Case, CaseBase, CaseBaseError

DEFAULT_PHANTOMS = 200
PHANTOM_SIZE = 256
PHANTOM_SEED = 10_000  # separate from the seeds training/evaluation use, so demo queries are not in the base

# Indiana MeSH "major" heading → canonical finding (the first path element of the heading).
MESH_TO_FINDING = {
    "opacity": "lung_opacity", "density": "lung_opacity", "pulmonary atelectasis": "atelectasis",
    "volume loss": "atelectasis", "cardiomegaly": "cardiomegaly", "calcified granuloma": "granuloma",
    "granulomatous disease": "granuloma", "granuloma": "granuloma", "cicatrix": "scarring",
    "pleural effusion": "effusion", "airspace disease": "consolidation", "consolidation": "consolidation",
    "nodule": "nodule", "mass": "mass", "fractures, bone": "fracture", "pulmonary congestion": "edema",
    "pulmonary edema": "edema", "heart failure": "edema", "infiltrate": "infiltration", "emphysema": "emphysema",
    "pulmonary emphysema": "emphysema", "pulmonary disease, chronic obstructive": "emphysema",
    "lung, hyperlucent": "emphysema", "hernia, hiatal": "hernia", "pneumonia": "pneumonia",
    "pneumothorax": "pneumothorax", "pulmonary fibrosis": "fibrosis", "lung diseases, interstitial": "fibrosis",
    "catheters, indwelling": "devices", "implanted medical device": "devices", "tube, inserted": "devices",
    "medical device": "devices", "stents": "devices", "surgical instruments": "devices",
}


def indiana_labels(mesh: Iterable[str]) -> tuple[tuple[str, ...], bool]:
    """Canonical labels and the normal flag from Indiana MeSH major headings."""
    labels: set[str] = set()
    normal = False
    for term in mesh:
        parts = [p.strip().lower() for p in term.split("/")]
        if parts[0] == "normal":
            normal = True
        elif parts[0] == "thickening" and any("pleura" in p for p in parts):
            labels.add("pleural_thickening")
        elif parts[0] in MESH_TO_FINDING:
            labels.add(MESH_TO_FINDING[parts[0]])
    return tuple(sorted(labels)), normal and not labels


def _parse_indiana_tgz(limit: int | None) -> list[dict]:
    """Fallback reader of torchxrayvision's NLMCXR_reports.tgz when the NLP package's loader is absent."""
    import importlib.util

    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None:
        raise FileNotFoundError("torchxrayvision is not installed; the Indiana reports ship inside its wheel")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "NLMCXR_reports.tgz"
    reports = []
    with tarfile.open(path, "r:gz") as archive:
        for member in archive:
            if not (member.isfile() and member.name.endswith(".xml")):
                continue
            root = ET.fromstring(archive.extractfile(member).read())
            uid = root.find("uId")
            sections = {(n.get("Label") or "").upper(): " ".join((n.text or "").split())
                        for n in root.iter("AbstractText")}
            reports.append({"id": uid.get("id") if uid is not None else member.name,
                            "findings": sections.get("FINDINGS", ""), "impression": sections.get("IMPRESSION", ""),
                            "mesh": [n.text for n in root.iter("major") if n.text]})
    reports.sort(key=lambda r: int(re.sub(r"\D", "", r["id"]) or 0))
    return reports[:limit] if limit is not None else reports


def indiana_cases(limit: int | None = None) -> list[Case]:
    """Indiana/OpenI reports as text-only cases (reports with neither findings nor impression are skipped)."""
    try:
        from medsight.nlp.indiana import load_indiana_reports
        reports = load_indiana_reports(limit)
    except ImportError:
        reports = _parse_indiana_tgz(limit)
    cases = []
    for report in reports:
        parts = [f"FINDINGS: {report['findings']}" if report.get("findings") else "",
                 f"IMPRESSION: {report['impression']}" if report.get("impression") else ""]
        text = "\n".join(p for p in parts if p)
        if not text:
            continue
        labels, normal = indiana_labels(report.get("mesh", []))
        cases.append(Case(case_id=f"indiana-{report['id']}", report=text, labels=labels, normal=normal, view="",
                          source="indiana", report_id=report["id"]))
    return cases


ProgressFn = Callable[[int, int, str], None]


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _progress(total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="case", disable=quiet, file=sys.stderr)


def add_indiana(base: CaseBase, limit: int | None = None, batch_size: int = 128, quiet: bool = False,
                progress: ProgressFn | None = None) -> AddStats:
    """Index Indiana reports (text-only). Idempotent by id.

    Args:
        progress: called as progress(done, total, description) after each batch (for the app's progress bar).
    """
    cases = indiana_cases(limit)
    stats = AddStats()
    done = 0  # counted here: a disabled (quiet) tqdm bar does not count
    with _progress(len(cases), "Indiana reports", quiet) as bar:
        for batch in _batches(cases, batch_size):
            stats += base.add_cases(batch)
            bar.update(len(batch))
            done += len(batch)
            if progress:
                progress(done, len(cases), "Indiana/OpenI reports")
    return stats


def add_phantoms(base: CaseBase, n: int = DEFAULT_PHANTOMS, seed: int = PHANTOM_SEED, size: int = PHANTOM_SIZE,
                 image_dir: Path | None = None, batch_size: int = 16, quiet: bool = False,
                 progress: ProgressFn | None = None) -> AddStats:
    """Index synthetic phantoms (image + report). Phantom i has seed `seed + i`; existing ids are not regenerated.

    Args:
        image_dir: where thumbnails are written (PNG) so result pages can show them.
    """
    from medsight.synthetic import generate_phantom, write_png

    ids = [f"phantom-{seed + i}" for i in range(n)]
    have = base.existing_ids(ids, "case_reports") & base.existing_ids(ids, "case_images")
    stats = AddStats(skipped=len(have))
    todo = [i for i in range(n) if ids[i] not in have]
    if image_dir is not None:
        image_dir.mkdir(parents=True, exist_ok=True)
    done = len(have)
    with _progress(n, "Phantoms", quiet) as bar:
        bar.update(len(have))
        for batch in _batches(todo, batch_size):
            cases, images = [], []
            for i in batch:
                phantom = generate_phantom(seed + i, size=size)  # ~half normal, decided by the seed
                path = ""
                if image_dir is not None:
                    path = str(write_png(phantom, image_dir / f"{ids[i]}.png"))
                cases.append(Case(case_id=ids[i], report=phantom.report, labels=tuple(phantom.labels),
                                  normal=not phantom.labels, view="PA", source="phantom", report_id=ids[i],
                                  image_path=path))
                images.append(phantom.image)
            stats += base.add_cases(cases, images)
            bar.update(len(batch))
            done += len(batch)
            if progress:
                progress(done, n, "synthetic phantoms")
    return stats


def _read_image(path: Path) -> np.ndarray:
    try:
        from medsight.ingest import load_study

        return load_study(path).image
    except ImportError:
        from PIL import Image

        return np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0


def _split_labels(value) -> tuple[str, ...]:
    from medsight.llm.rules import canonical

    if isinstance(value, (list, tuple)):
        items = value
    else:
        items = re.split(r"[|;,]", str(value or ""))
    return tuple(sorted({canonical(x) for x in items if str(x).strip() and str(x).strip().lower() != "normal"}))


def manifest_rows(path: Path) -> list[dict]:
    """Rows of a CSV or JSONL manifest with keys id (optional), image (optional), report, labels (optional), view."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        if ".jsonl" in path.name or ".ndjson" in path.name:
            rows = [json.loads(line) for line in handle if line.strip()]
        else:
            rows = list(csv.DictReader(handle))
    out = []
    for number, row in enumerate(rows, start=1):
        image = row.get("image") or row.get("image_path") or row.get("path") or ""
        report = row.get("report") or row.get("text") or row.get("report_text") or ""
        if not image and not report:
            raise ValueError(f"{path.name} row {number}: needs an image path or report text")
        # Without an id column the id is a content hash, so re-running the same manifest adds nothing.
        key = row.get("id") or row.get("case_id") or hashlib.sha1(f"{image}\n{report}".encode()).hexdigest()[:16]
        raw_labels = row.get("labels")
        out.append({"id": f"manifest-{key}", "image": image, "report": report, "labels": _split_labels(raw_labels),
                    "normal": "normal" in str(raw_labels or "").lower(), "view": row.get("view", "")})
    return out


def add_manifest(base: CaseBase, path: Path, batch_size: int = 16, quiet: bool = False) -> AddStats:
    """Index a manifest (relative image paths resolve against the manifest's folder)."""
    rows = manifest_rows(path)
    stats = AddStats()
    with _progress(len(rows), f"Manifest {path.name}", quiet) as bar:
        for batch in _batches(rows, batch_size):
            cases, images = [], []
            for row in batch:
                image_path = (path.parent / row["image"]) if row["image"] and not Path(row["image"]).is_absolute() \
                    else Path(row["image"]) if row["image"] else None
                cases.append(Case(row["id"], row["report"], row["labels"], normal=row["normal"] and not row["labels"],
                                  view=row["view"], source="manifest", report_id=row["id"],
                                  image_path=str(image_path or "")))
                images.append(_read_image(image_path) if image_path else None)
            stats += base.add_cases(cases, images)
            bar.update(len(batch))
    return stats


CHEXPERT_COLUMNS = {"Atelectasis": "atelectasis", "Cardiomegaly": "cardiomegaly", "Consolidation": "consolidation",
                    "Edema": "edema", "Enlarged Cardiomediastinum": "enlarged_cardiomediastinum",
                    "Fracture": "fracture", "Lung Lesion": "lung_lesion", "Lung Opacity": "lung_opacity",
                    "Pleural Effusion": "effusion", "Pleural Other": "pleural_thickening", "Pneumonia": "pneumonia",
                    "Pneumothorax": "pneumothorax", "Support Devices": "devices"}


def mimic_rows(root: Path) -> list[dict]:
    """Studies of a MIMIC-CXR-style tree: `sNNN.txt` report beside an `sNNN/` folder of images.

    Labels come from `mimic-cxr-2.0.0-chexpert.csv(.gz)` in the root when present (1.0 = positive).
    """
    labels: dict[str, tuple[str, ...]] = {}
    for name in ("mimic-cxr-2.0.0-chexpert.csv.gz", "mimic-cxr-2.0.0-chexpert.csv"):
        table = root / name
        if table.is_file():
            with (gzip.open(table, "rt") if name.endswith(".gz") else open(table)) as handle:
                for row in csv.DictReader(handle):
                    labels[f"s{row['study_id']}"] = tuple(sorted(v for k, v in CHEXPERT_COLUMNS.items()
                                                                 if row.get(k) in ("1.0", "1")))
            break
    rows = []
    for report in sorted(root.rglob("s*.txt")):
        study = report.stem
        folder = report.with_suffix("")
        images = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".dcm")) \
            if folder.is_dir() else []
        rows.append({"id": f"mimic-{study}", "report": report.read_text(errors="replace").strip(),
                     "image": str(images[0]) if images else "", "labels": labels.get(study, ()), "view": ""})
    return rows


def add_mimic(base: CaseBase, root: Path, batch_size: int = 16, quiet: bool = False) -> AddStats:
    rows = mimic_rows(root)
    stats = AddStats()
    with _progress(len(rows), "MIMIC-style studies", quiet) as bar:
        for batch in _batches(rows, batch_size):
            have = base.existing_ids([r["id"] for r in batch])
            cases = [Case(r["id"], r["report"], r["labels"], view=r["view"], source="mimic", report_id=r["id"],
                          image_path=r["image"]) for r in batch]
            images = [_read_image(Path(r["image"])) if r["image"] and r["id"] not in have else None for r in batch]
            stats += base.add_cases(cases, images)
            bar.update(len(batch))
    return stats


def build_default(base: CaseBase, settings: Settings | None = None, indiana: int | None = None,
                  phantoms: int = DEFAULT_PHANTOMS, quiet: bool = False, progress: ProgressFn | None = None) -> AddStats:
    """The default case base: the real Indiana reports plus phantom image+report pairs."""
    settings = settings or get_settings()
    stats = add_indiana(base, indiana, quiet=quiet, progress=progress)
    if phantoms:
        stats += add_phantoms(base, phantoms, image_dir=settings.home / "casebase" / "images", quiet=quiet,
                              progress=progress)
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medsight.retrieval.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chroma-dir", type=Path, help="Chroma folder (default: <data dir>/chroma)")
    parser.add_argument("--indiana", type=int, nargs="?", const=-1, default=-1,
                        help="index the first N Indiana reports (default: all 3,955)")
    parser.add_argument("--no-indiana", action="store_true", help="skip the Indiana reports")
    parser.add_argument("--phantoms", type=int, default=DEFAULT_PHANTOMS, help="number of phantom cases (0: none)")
    parser.add_argument("--phantom-seed", type=int, default=PHANTOM_SEED)
    parser.add_argument("--phantom-size", type=int, default=PHANTOM_SIZE)
    parser.add_argument("--manifest", type=Path, action="append", default=[], help="CSV/JSONL manifest (repeatable)")
    parser.add_argument("--mimic", type=Path, help="MIMIC-CXR-style folder")
    parser.add_argument("--reset-images", action="store_true", help="drop the image index first (new image embedder)")
    parser.add_argument("--reset-reports", action="store_true", help="drop the report index first")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    settings = get_settings().ensure_dirs()
    try:
        base = CaseBase(args.chroma_dir, settings=settings)
        if args.reset_images:
            base.reset(["case_images"])
        if args.reset_reports:
            base.reset(["case_reports"])
        start = time.perf_counter()
        stats = AddStats()
        if not args.no_indiana:
            stats += add_indiana(base, None if args.indiana < 0 else args.indiana, quiet=args.quiet)
        if args.phantoms:
            stats += add_phantoms(base, args.phantoms, seed=args.phantom_seed, size=args.phantom_size,
                                  image_dir=settings.home / "casebase" / "images", quiet=args.quiet)
        for manifest in args.manifest:
            stats += add_manifest(base, manifest, quiet=args.quiet)
        if args.mimic:
            stats += add_mimic(base, args.mimic, quiet=args.quiet)
    except (CaseBaseError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = base.count()
    print(f"added {stats.added_reports} report and {stats.added_images} image embeddings, skipped {stats.skipped} "
          f"existing; case base now holds {counts['case_reports']} reports and {counts['case_images']} images "
          f"({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
