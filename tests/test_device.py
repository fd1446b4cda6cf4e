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
