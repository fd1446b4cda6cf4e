"""Device choice with faked availability."""

import pytest

from medsight import device


@pytest.fixture
def fake(monkeypatch):
    def _set(cuda=False, mps=False):
        monkeypatch.setattr(device, "cuda_available", lambda: cuda)
        monkeypatch.setattr(device, "mps_available", lambda: mps)

    return _set


@pytest.mark.parametrize(
    "cuda, mps, expected",
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_prefers_cuda_then_mps_then_cpu(fake, cuda, mps, expected):
    fake(cuda=cuda, mps=mps)
    assert device.pick_device("auto").torch_device == expected


def test_explicit_unavailable_device_falls_back_to_cpu_with_reason(fake):
    fake(cuda=False, mps=False)
    info = device.pick_device("cuda")
    assert info.torch_device == "cpu"
    assert "not available" in info.reason
    info = device.pick_device("mps")
    assert info.torch_device == "cpu"


def test_explicit_available_device_is_used(fake):
    fake(cuda=True, mps=False)
    assert device.pick_device("cuda").torch_device == "cuda"
    assert device.pick_device("cpu").torch_device == "cpu"


def test_unknown_device_is_rejected():
    with pytest.raises(ValueError, match="Unknown device"):
        device.pick_device("tpu")


def test_mlx_reported_from_importability(monkeypatch):
    monkeypatch.setattr(device.importlib.util, "find_spec", lambda name: object() if name == "mlx" else None)
    info = device.pick_device("cpu")
    assert info.mlx is True and info.mlx_vlm is False


def test_real_probe_on_this_machine_runs():
    info = device.pick_device("auto")
    assert info.torch_device in {"cpu", "cuda", "mps"}
    assert set(info.to_dict()) >= {"torch_device", "reason", "mlx"}


# ----------------------------------------------------------------------------------- Apple Silicon, simulated

def test_mps_fallback_is_switched_on_before_torch_loads_on_apple_silicon():
    environ: dict = {}
    state = device.enable_mps_fallback(environ, apple_silicon=True, torch_imported=False)
    assert state.enabled and environ == {"PYTORCH_ENABLE_MPS_FALLBACK": "1"}


def test_mps_fallback_respects_the_user_and_says_when_it_is_too_late():
    environ = {"PYTORCH_ENABLE_MPS_FALLBACK": "0"}
    state = device.enable_mps_fallback(environ, apple_silicon=True, torch_imported=False)
    assert not state.enabled and environ["PYTORCH_ENABLE_MPS_FALLBACK"] == "0" and "user" in state.note
    environ = {}
    late = device.enable_mps_fallback(environ, apple_silicon=True, torch_imported=True)
    assert not late.enabled and environ == {} and "before" in late.note
    assert device.enable_mps_fallback({"PYTORCH_ENABLE_MPS_FALLBACK": "1"}, apple_silicon=True,
                                      torch_imported=True).enabled, "set by the user before start: fine"
    elsewhere: dict = {}
    assert not device.enable_mps_fallback(elsewhere, apple_silicon=False).enabled and elsewhere == {}


def test_importing_medsight_sets_the_fallback_before_torch_on_a_simulated_mac():
    code = ("import sys, platform; sys.platform = 'darwin'; platform.machine = lambda: 'arm64'\n"
            "import os, medsight\n"
            "print(os.environ.get('PYTORCH_ENABLE_MPS_FALLBACK'), 'torch' in sys.modules, medsight.MPS_FALLBACK.enabled)")
    out = _fresh_python(code, unset="PYTORCH_ENABLE_MPS_FALLBACK")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "False", "True"]


def _fresh_python(code: str, unset: str):
    """Run `code` in a new interpreter at the repository root, without the environment variable `unset`."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != unset}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))


def test_idle_openmp_threads_sleep_unless_the_user_chose_otherwise():
    environ: dict[str, str] = {}
    policy = device.configure_cpu_threads(environ, torch_imported=False)
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"} and policy.wait_policy == "PASSIVE"
    kept = {"OMP_WAIT_POLICY": "active"}
    assert device.configure_cpu_threads(kept, torch_imported=False).wait_policy == "ACTIVE"
    assert kept == {"OMP_WAIT_POLICY": "active"}
    late: dict[str, str] = {}
    too_late = device.configure_cpu_threads(late, torch_imported=True)
    assert late == {} and too_late.wait_policy == "ACTIVE" and "before" in too_late.note


def test_importing_medsight_sets_the_wait_policy_before_torch_loads():
    code = ("import os, sys, medsight\n"
            "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules, medsight.CPU_THREADS.wait_policy)")
    out = _fresh_python(code, unset="OMP_WAIT_POLICY")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["PASSIVE", "False", "PASSIVE"]


@pytest.mark.parametrize("device_name, kind, macos, expected", [
    ("mps", "llm", (13, 6), "float16"),  # MPS gained bfloat16 in macOS 14
    ("mps", "llm", (14, 0), "bfloat16"),
    ("mps", "image", (15, 1), "float32"),  # calibrated thresholds stay in float32
    ("cuda", "llm", None, "bfloat16"),
    ("cpu", "llm", None, "bfloat16"),
    ("cpu", "image", None, "float32"),
])
def test_model_dtype_choices(device_name, kind, macos, expected):
    assert device.model_dtype(device_name, kind, macos) == expected


def test_model_dtype_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown model kind"):
        device.model_dtype("mps", "audio")


def test_smollm2_on_mps_before_macos_14_loads_in_float16(monkeypatch):
    from medsight.llm import local

    seen = {}
    monkeypatch.setattr(device, "macos_version", lambda: (13, 6))
    monkeypatch.setattr(local, "load_transformers_backend",
                        lambda folder, **kw: seen.update(kw) or __import__("types").SimpleNamespace())
    local.load_smollm2(device="mps")
    assert seen["device"] == "mps" and seen["dtype"] == "float16"
    local.load_smollm2(device="cpu")
    assert seen["dtype"] == "bfloat16"


def _slot_names():
    from medsight import registry

    # Only the product's slots (other test modules register stand-ins in the same process).
    return [slot.name for slot in registry.all_slots() if slot.sources[0].loader.__module__.startswith("medsight.")]


def test_every_registered_slot_has_a_placement():
    for target in (device.APPLE_SILICON_MAC, device.Platform("Linux, CPU only")):
        rows = device.placements(_slot_names(), target)
        assert [r.slot for r in rows] == _slot_names()
        assert not [r.slot for r in rows if r.processor == "-"], "a slot without a placement rule"


def test_what_runs_where_on_a_mac():
    rows = {r.slot: r for r in device.placements(_slot_names(), device.APPLE_SILICON_MAC)}
    for slot in ("anomaly.detector", "pathology.classifier", "retrieval.image_embedder"):
        assert rows[slot].processor == "Apple GPU (MPS)" and rows[slot].dtype == "float32"
        assert "fall back to the CPU" in rows[slot].note
    assert rows["llm.text"].processor == "Apple GPU (MLX)" and rows["llm.text"].framework == "MLX (mlx-vlm)"
    assert "bfloat16" in rows["llm.text"].note, "the transformers fallback's dtype is stated"
    voice = [r for s, r in rows.items() if s.startswith("voice.")]
    assert voice and all(r.processor == "CPU" and r.dtype == "int8" and "Metal" in r.note for r in voice)
    # Without mlx-vlm on an older macOS, the language model runs through transformers on MPS in float16.
    old = device.Platform("Mac, macOS 13, no mlx-vlm", apple_silicon=True, mps=True, macos=(13, 6))
    llm = next(r for r in device.placements(["llm.text"], old))
    assert llm.processor == "Apple GPU (MPS)" and llm.dtype == "float16"
    # MEDSIGHT_DEVICE=cpu keeps torch off the GPU; MLX is separate from torch's device choice.
    pinned = {r.slot: r for r in device.placements(_slot_names(), device.APPLE_SILICON_MAC, preference="cpu")}
    assert pinned["anomaly.detector"].processor == "CPU" and pinned["llm.text"].processor == "Apple GPU (MLX)"


def test_this_machine_probe_follows_the_simulated_platform(monkeypatch):
    monkeypatch.setattr(device.sys, "platform", "darwin")
    monkeypatch.setattr(device.platform, "machine", lambda: "arm64")
    monkeypatch.setattr(device.platform, "mac_ver", lambda: ("14.5", ("", "", ""), "arm64"))
    monkeypatch.setattr(device, "cuda_available", lambda: False)
    monkeypatch.setattr(device, "mps_available", lambda: True)
    here = device.Platform.this_machine()
    assert here.apple_silicon and here.mps and here.macos == (14, 5)
    assert device.pick_device("auto").torch_device == "mps"
    assert device.placements(["anomaly.detector"])[0].processor == "Apple GPU (MPS)"


def test_system_page_shows_what_would_run_on_a_mac(logged_in_app):
    at = logged_in_app()
    at.switch_page("views/system.py").run(timeout=120)
    assert not at.exception
    choice = at.radio(key="system_placement_platform")
    assert choice.value == "This machine"
    here = next(d.value for d in at.dataframe if "Runs on" in d.value.columns)
    assert "Apple GPU (MPS)" not in set(here["Runs on"]), "this Linux machine has no MPS"
    at = choice.set_value(device.APPLE_SILICON_MAC.label).run(timeout=120)
    assert not at.exception
    mac = next(d.value for d in at.dataframe if "Runs on" in d.value.columns)
    where = dict(zip(mac["Model"], mac["Runs on"]))
    assert where["Language model (local)"] == "Apple GPU (MLX)"
    assert where["Anomaly detector (VGG16 → VAE → ViT)"] == "Apple GPU (MPS)"
    assert any("PYTORCH_ENABLE_MPS_FALLBACK" in c.value for c in at.caption)
