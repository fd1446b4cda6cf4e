"""The HTTP guard (medsight/webguard.py): headers on every response, the browser cookie, and who may fetch media.

The guard wraps a small Starlette app here (served in-process by Starlette's TestClient), and the media rules
run against Streamlit's real MediaFileManager, so a change of the pinned Streamlit's internals fails here
rather than silently serving files. The browser tests (tests/e2e/test_security_browser.py) check the same
rules against the running app.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from medsight import webguard
from medsight.webguard import CLIENT_COOKIE, MediaAccess, WorkstationGuard, content_security_policy

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.timezone.utc)
ROOT = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


class FakeMedia:
    """Stands in for Streamlit's media store: which session shows which file, and the files' bytes."""

    def __init__(self):
        self.shown: dict[str, set[str]] = {}
        self.files: dict[str, bytes] = {}

    def owners(self, file_id: str) -> set[str]:
        return {sid for sid, ids in self.shown.items() if file_id in ids}

    def read(self, file_id: str) -> bytes | None:
        return self.files.get(file_id)


@pytest.fixture
def media():
    return FakeMedia()


@pytest.fixture
def access(media):
    return MediaAccess(owners=media.owners, reader=media.read, clock=Clock())


@pytest.fixture
def client(access, media):
    async def page(request):
        return PlainTextResponse("page", headers={"X-Frame-Options": "SAMEORIGIN"})  # the guard's value wins

    async def media_file(request):
        content = media.files.get(request.path_params["file_id"].rsplit(".", 1)[0])
        return Response(content, media_type="image/png") if content is not None else PlainTextResponse("", 404)

    app = Starlette(routes=[Route("/", page), Route("/media/{file_id}", media_file)],
                    middleware=[Middleware(WorkstationGuard, access=access, csp="default-src 'self'")])
    return TestClient(app, base_url="http://127.0.0.1")


def _cookie_of(response) -> str:
    match = re.search(rf"{CLIENT_COOKIE}=([^;]+)", response.headers["set-cookie"])
    return match.group(1)


def test_every_response_carries_the_security_headers(client):
    for path in ("/", "/media/unknown.png", "/no-such-page"):
        headers = client.get(path).headers
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["content-security-policy"] == "default-src 'self'"


def test_browser_gets_a_private_cookie_once(client):
    first = client.get("/")
    cookie = first.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert webguard.is_client_token(_cookie_of(first))
    again = client.get("/")  # the TestClient sends the cookie back
    assert "set-cookie" not in again.headers


def test_media_only_for_the_signed_in_session_that_showed_it(client, access, media):
    media.files["scan"] = b"\x89PNG radiograph"
    browser = _cookie_of(client.get("/"))
    stranger = TestClient(client.app, base_url="http://127.0.0.1")
    other = _cookie_of(stranger.get("/"))

    assert client.get("/media/scan.png").status_code == 404  # not signed in
    access.grant("session-a", browser, "alice", T0 + dt.timedelta(minutes=60))
    access.grant("session-b", other, "bob", T0 + dt.timedelta(minutes=60))
    assert client.get("/media/scan.png").status_code == 404  # signed in, but the page never showed it

    media.shown["session-a"] = {"scan"}
    ok = client.get("/media/scan.png")
    assert ok.status_code == 200 and ok.content == b"\x89PNG radiograph"
    assert ok.headers["cache-control"] == "no-store" and ok.headers["x-frame-options"] == "DENY"
    assert stranger.get("/media/scan.png").status_code == 404  # another signed-in user
    anonymous = TestClient(client.app, base_url="http://127.0.0.1", cookies={})
    anonymous.cookies.clear()
    assert anonymous.get("/media/scan.png").status_code == 404  # no cookie at all
    forged = TestClient(client.app, base_url="http://127.0.0.1", cookies={CLIENT_COOKIE: "x" * 43})
    assert forged.get("/media/scan.png").status_code == 404

    access.revoke("session-a")  # sign-out
    assert client.get("/media/scan.png").status_code == 404


def test_media_stops_at_session_expiry_even_without_a_rerun(client, access, media):
    media.files["scan"] = b"pixels"
    media.shown["session-a"] = {"scan"}
    browser = _cookie_of(client.get("/"))
    access.grant("session-a", browser, "alice", T0 + dt.timedelta(minutes=1))
    assert client.get("/media/scan.png").status_code == 200
    access._clock.now = T0 + dt.timedelta(minutes=1, seconds=1)
    assert client.get("/media/scan.png").status_code == 404


def test_files_of_the_previous_run_stay_servable_while_a_rerun_rebuilds_the_page(client, access, media):
    media.files["scan"] = b"pixels"
    browser = _cookie_of(client.get("/"))
    access.grant("session-a", browser, "alice", T0 + dt.timedelta(minutes=60))
    access.remember_shown("session-a", {"scan"})  # end of the last run; Streamlit cleared its refs since
    assert client.get("/media/scan.png").status_code == 200


def test_download_built_on_request_is_served_only_to_its_session(client, access, media):
    browser = _cookie_of(client.get("/"))
    access.grant("session-a", browser, "alice", T0 + dt.timedelta(minutes=60))
    pdf = b"%PDF-1.7 report of alice"
    media.files["report"] = pdf  # Streamlit stores a generated download without tying it to a session
    assert client.get("/media/report.pdf").status_code == 404
    access.remember_download("session-a", pdf)
    assert client.get("/media/report.pdf").status_code == 200
    other = TestClient(client.app, base_url="http://127.0.0.1")
    access.grant("session-b", _cookie_of(other.get("/")), "bob", T0 + dt.timedelta(minutes=60))
    assert other.get("/media/report.pdf").status_code == 404


def test_grant_needs_a_valid_browser_cookie(access):
    assert not access.grant("session-a", None, "alice", T0 + dt.timedelta(minutes=5))
    assert not access.grant("session-a", "short", "alice", T0 + dt.timedelta(minutes=5))
    assert access.sessions() == {}


def test_csp_allows_only_the_own_origin_and_streamlits_inline_script():
    import streamlit

    html = (Path(streamlit.__file__).parent / "static" / "index.html").read_text(encoding="utf-8")
    csp = content_security_policy()
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert directives["default-src"] == "'self'" and directives["connect-src"] == "'self'"
    script = directives["script-src"].split()
    assert "'unsafe-inline'" not in script and "'unsafe-eval'" not in script
    hashes = webguard.inline_script_hashes(html)
    assert hashes and all(h in script for h in hashes)  # Streamlit's one inline script, by hash
    for value in directives.values():  # no other host, no wildcard
        assert "http" not in value and "*" not in value


def test_media_owners_read_streamlits_real_media_manager(monkeypatch):
    """`streamlit_media_owners` relies on the pinned Streamlit's MediaFileManager bookkeeping."""
    from streamlit.runtime import media_file_manager as mfm
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    manager = mfm.MediaFileManager(MemoryMediaFileStorage("/media"))
    monkeypatch.setattr(webguard, "_media_manager", lambda: manager)
    monkeypatch.setattr(mfm, "_get_session_id", lambda: "session-a")
    url = manager.add(b"\x89PNG pixels", "image/png", "1.(2).3")
    file_id = url.rsplit("/", 1)[-1].rsplit(".", 1)[0]  # "/media/<id>.png"
    assert webguard.streamlit_media_owners(file_id) == {"session-a"}
    assert webguard.session_media_ids("session-a") == {file_id}
    assert webguard.streamlit_media_bytes(file_id) == b"\x89PNG pixels"
    manager.clear_session_refs("session-a")
    assert webguard.streamlit_media_owners(file_id) == set()
