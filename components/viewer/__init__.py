"""The reading-room viewer as a Streamlit component: `viewer(study, maps)` shows the study at full resolution.

Built on Streamlit's components v2 rather than v1: a v1 component is an iframe, and the workstation refuses
to be framed by anyone (X-Frame-Options DENY, `frame-ancestors 'none'` on every response, medsight/webguard.py).
A v2 component runs in the page itself; its script is the committed bundle `build/viewer.js`, served by
Streamlit from this folder under `/_stcore/bidi-components/`, so the Content-Security-Policy stays unchanged
('self' scripts only, no blob: or eval). The pixels travel as one binary message (`medsight.display.pack`).

Rebuild the bundle with `make viewer` (npm ci + esbuild in `frontend/`).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Mapping

from medsight.display import pack, viewer_payload

NAME = "medsight.viewer"
ROOT = Path(__file__).resolve().parent
BUILD = ROOT / "build"
SCRIPT = "viewer.js"
_CACHE_KEY = "_viewer_payloads"
STATE_KEY = "viewer_state"  # study_id → last reported state, for the analysis record and the PDF
_CACHE_SIZE = 4  # messages kept per session: up to three viewers on a page (prior comparison) and the one before
_renderers: dict[int, Any] = {}
_lock = threading.Lock()


def _renderer() -> Any | None:
    """The mount function registered on the running Streamlit runtime (None without a runtime)."""
    import streamlit as st
    from streamlit.components.v2.manifest_scanner import ComponentConfig, ComponentManifest
    from streamlit.runtime import Runtime

    if not Runtime.exists():
        return None
    manager = Runtime.instance().bidi_component_registry
    with _lock:
        mount = _renderers.get(id(manager))
        if mount is None:
            if manager.get_component_asset_root(NAME) is None:
                # What an installed package declares in its pyproject.toml, declared here for this folder.
                manifest = ComponentManifest(name="medsight", version="1",
                                             components=[ComponentConfig(name="viewer", asset_dir="build")])
                manager.register_from_manifest(manifest, ROOT)
            mount = st.components.v2.component(NAME, js=SCRIPT, isolate_styles=False)
            _renderers.clear()  # one runtime per process, except under AppTest
            _renderers[id(manager)] = mount
    return mount


def _message(study: Any, maps: Mapping[str, Any] | None, show_maps: bool, link_group: str | None = None) -> bytes:
    """The packed payload, built once per study, map set and link group in this session."""
    import streamlit as st

    key = (getattr(study, "study_id", id(study)), show_maps, link_group,
           tuple((str(k), id(getattr(v, "heat", v)), getattr(v, "opacity", None)) for k, v in (maps or {}).items()))
    cache = st.session_state.setdefault(_CACHE_KEY, {})
    message = cache.get(key)
    if message is None:
        message = pack(viewer_payload(study, maps, show_maps=show_maps, link_group=link_group))
        cache[key] = message
        while len(cache) > _CACHE_SIZE:
            cache.pop(next(iter(cache)))
    return message


def viewer(study: Any, maps: Mapping[str, Any] | None = None, *, key: str = "viewer",
           show_maps: bool = False, link_group: str | None = None) -> dict | None:
    """Show `study` in the viewer, with `maps` (key → HeatmapResult or array) as toggleable colour layers.

    `show_maps` opens with the layers on (the Heatmap page, where the reader chose the map). Viewers given the
    same `link_group` on a page follow each other's zoom (same mm per screen pixel when both films are
    calibrated, else the same fraction of the fitted image), pan (the same point of the image, as a fraction
    of its width and height, at the centre) and window (only between films of the same modality and
    photometric interpretation); their toolbar has a Link toggle (key K) to unlink them.

    Returns:
        The viewer's last reported state, or None before it has reported: ``window`` (centre, width),
        ``invert``, ``zoom`` (screen pixels per image pixel), ``renderer`` ("webgl" or "cpu"), ``calibration``
        and ``measurements`` (each with ``type``, ``value``, ``unit``, ``calibrated``, ``spacing_source``,
        ``plane``, ``points`` in image pixels).
    """
    import streamlit as st

    mount = _renderer()
    if mount is None:
        return None
    if not (BUILD / SCRIPT).is_file():
        st.warning("The image viewer is not built: run `make viewer`.", icon=":material/build:")
        return None
    result = mount(key=key, data=_message(study, maps, show_maps, link_group), on_value_change=lambda: None)
    value = getattr(result, "value", None) if result is not None else None
    if not isinstance(value, dict) or value.get("study_id") != getattr(study, "study_id", None):
        return None  # nothing reported yet, or a report about the study shown before this one
    st.session_state.setdefault(STATE_KEY, {})[value["study_id"]] = value
    measurements = value.get("measurements") or []
    if measurements:
        st.caption("Kept with this study for the report: " + "; ".join(
            f"{m.get('type')} {float(m.get('value', 0)):.1f} {m.get('unit')}"
            + ("" if m.get("calibrated") else " (uncalibrated)") for m in measurements))
    return value


def viewer_state(study_id: str) -> dict | None:
    """The last state a viewer reported for a study in this session (window, measurements, ...)."""
    import streamlit as st

    return (st.session_state.get(STATE_KEY) or {}).get(study_id)
