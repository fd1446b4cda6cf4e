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


def test_a_rerun_reuses_rows_only_when_the_settings_match(tmp_path, capsys):
    folder, out = tmp_path / "studies", tmp_path / "out"
    folder.mkdir()
    for i in range(2):
        write_png(generate_phantom(40 + i, size=128), folder / f"p{i}.png")
    summary = lambda: json.loads((out / "results.json").read_text())["summary"]  # noqa: E731

    assert batch.main([str(folder), "--out", str(out), "--no-pathology"]) == 0
    assert batch.main([str(folder), "--out", str(out), "--no-pathology"]) == 0
    assert summary()["reused"] == 2 and summary()["processed_now"] == 0
    capsys.readouterr()
    assert batch.main([str(folder), "--out", str(out)]) == 0  # pathology on: other settings, score again
    assert "other models or settings" in capsys.readouterr().err
    assert summary()["reused"] == 0 and summary()["processed_now"] == 2
    assert batch.main([str(folder), "--out", str(out), "--fresh"]) == 0
    assert summary()["reused"] == 0 and summary()["processed_now"] == 2

    (folder / "p1.png").write_bytes((folder / "p0.png").read_bytes())  # replaced: new size/time, scored again
    assert batch.main([str(folder), "--out", str(out)]) == 0
    assert summary()["reused"] == 1 and summary()["processed_now"] == 1


def test_a_run_stopped_part_way_is_finished_by_the_rerun(tmp_path):
    folder = tmp_path / "studies"
    folder.mkdir()
    for i in range(4):
        write_png(generate_phantom(60 + i, size=256), folder / f"p{i}.png")
    (folder / "p4.png").write_bytes(b"not a picture")
    clean, resumed = tmp_path / "clean", tmp_path / "resumed"
    assert batch.main([str(folder), "--out", str(clean), "--no-pathology"]) == 0
    assert batch.main([str(folder), "--out", str(resumed), "--no-pathology", "--limit", "2"]) == 0
    partial = json.loads((resumed / "results.json").read_text())
    assert len(partial["rows"]) == 2 and partial["summary"]["remaining"] == 3
    assert batch.main([str(folder), "--out", str(resumed), "--no-pathology"]) == 0
    rows = [json.loads((out / "results.json").read_text())["rows"] for out in (clean, resumed)]
    assert [r["file"] for r in rows[0]] == [r["file"] for r in rows[1]]
    assert [r["status"] for r in rows[1]] == ["ok"] * 4 + ["unreadable"]
    for a, b in zip(*rows):
        score_a, score_b = a.pop("anomaly_score"), b.pop("anomaly_score")
        assert a == b and (score_a == score_b or abs(score_a - score_b) <= 1e-5 + 1e-9)
