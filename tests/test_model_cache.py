"""Loaded models in the app: forgotten when weights change on disk, and kept out of the collector's way."""

from __future__ import annotations

import gc

from medsight import model_cache
from medsight.config import Settings


def test_weights_installed_by_another_process_are_noticed_once(tmp_path):
    from medsight.weights import STAMP_FILE

    settings = Settings(home=tmp_path)
    watch = model_cache.WeightsWatch()
    assert not watch.changed(settings)  # the first look only remembers
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    (settings.models_dir / STAMP_FILE).write_text("installed anomaly.detector", encoding="utf-8")
    assert watch.changed(settings) and not watch.changed(settings)
    (settings.models_dir / STAMP_FILE).write_text("installed pathology.classifier", encoding="utf-8")
    watch.mark_seen(settings)  # this process reloaded them itself
    assert not watch.changed(settings)


def test_long_lived_objects_leave_the_collections_until_released():
    gc.unfreeze()
    model = {"weights": [object() for _ in range(1000)]}
    assert model_cache.long_lived(model) is model
    try:
        frozen = gc.get_freeze_count()
        assert frozen >= 1000
        assert not any(o is model for o in gc.get_objects())  # a full collection no longer walks it
    finally:
        model_cache.release_long_lived()
    assert gc.get_freeze_count() == 0
    assert any(o is model for o in gc.get_objects())
