"""Batch scoring CLI over a folder of generated studies."""

import csv
import json

from medsight import batch
from medsight.synthetic import generate_phantom, write_png
from medsight.synthetic.dicom import write_dicom


def test_scores_a_folder_and_lists_unreadable_files(tmp_path):
    folder = tmp_path / "studies"
    (folder / "sub").mkdir(parents=True)
    write_png(generate_phantom(1, size=256), folder / "normal.png")
    write_png(generate_phantom(2, size=256, findings=("cardiomegaly",)), folder / "sub" / "cardio.png")
    write_dicom(generate_phantom(3, size=256, findings=("effusion",)), folder / "effusion.dcm")
    (folder / "notes.txt").write_text("not an image")  # ignored: not an image suffix
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"

    assert batch.main([str(folder), "--out", str(out), "--batch-size", "2"]) == 0

    data = json.loads((out / "results.json").read_text())
    summary, rows = data["summary"], {r["file"].split("/")[-1]: r for r in data["rows"]}
    assert set(rows) == {"normal.png", "cardio.png", "effusion.dcm", "broken.png"}
    assert summary["scored"] == 3 and summary["unreadable"] == 1
    assert rows["broken.png"]["status"] == "unreadable" and rows["broken.png"]["message"]
    for name in ("normal.png", "cardio.png", "effusion.dcm"):
        assert 0.0 <= rows[name]["anomaly_score"] <= 1.0 and rows[name]["probabilities"]
    assert summary["models"]["anomaly.detector"]["tier"] == "demo"
    with open(out / "results.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 4 and "p_Cardiomegaly" in table[0]


def test_empty_folder_is_reported(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert batch.main([str(tmp_path / "empty")]) == 1
    assert "No PNG, JPEG or DICOM files" in capsys.readouterr().err
