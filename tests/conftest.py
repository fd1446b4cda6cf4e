"""Shared fixtures: every test gets its own MedSight data directory; helpers for the Streamlit shell."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TEST_USER = "tester"
TEST_PASSWORD = "correct-horse-battery-42"


@pytest.fixture(scope="session", autouse=True)
def pytorch_image_models():
    """No background ONNX export for every model a test loads (each test has its own model cache), set before
    any module-scoped model fixture loads; tests/test_onnx_runtime.py turns it on."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDSIGHT_RUNTIME", "torch")
        yield


@pytest.fixture(autouse=True)
def medsight_home(tmp_path, monkeypatch) -> Path:
    """A fresh `MEDSIGHT_HOME` per test, so no test touches the real data directory."""
    home = tmp_path / "medsight-home"
    monkeypatch.setenv("MEDSIGHT_HOME", str(home))
    # No copy or background build of the reference data per test; tests/test_reference.py turns it on.
    monkeypatch.setenv("MEDSIGHT_REFERENCE", "off")
    return home


@pytest.fixture
def account(medsight_home) -> tuple[str, str]:
    """A known account (user name, password) in the test's data directory."""
    from medsight.auth import UserStore
    from medsight.config import get_settings

    UserStore(get_settings().users_path).add(TEST_USER, TEST_PASSWORD, name="Test Radiologist")
    return TEST_USER, TEST_PASSWORD


@pytest.fixture
def app_test():
    """Factory: a fresh `AppTest` of app.py (not yet run); app.py's `st.navigation` routes every page."""
    from streamlit.testing.v1 import AppTest

    def make(timeout: float = 60) -> AppTest:
        return AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)

    return make


def _sign_in(at, username: str, password: str, timeout: float = 60):
    at.text_input(key="login_username").input(username)
    at.text_input(key="login_password").input(password)
    next(b for b in at.button if b.label == "Sign in").click()
    return at.run(timeout=timeout)


@pytest.fixture
def sign_in():
    """Function `sign_in(at, username, password)`: fill the sign-in form of a run AppTest and submit it."""
    return _sign_in


@pytest.fixture
def logged_in_app(account, app_test):
    """Factory: an `AppTest` of app.py already signed in as the test account.

    Usage:
        at = logged_in_app()
        at.switch_page("views/history.py").run()
        assert not at.exception
    """
    def make(timeout: float = 60):
        at = app_test(timeout)
        at.run()
        _sign_in(at, *account)
        assert not at.exception, [e.value for e in at.exception]
        assert at.session_state["username"] == account[0]
        return at

    return make
