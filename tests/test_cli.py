"""`bloodseg segment`: a folder of real smears into CSVs and exports, like the service counts."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import roifile
from PIL import Image

from app.cli import main
from tests.conftest import BCD, FIXTURE_BCCD, FIXTURE_BCD, running_server


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def service_result(client, path: Path) -> dict:
    files = {"image": (path.name, path.read_bytes())}
    return client.post("/segment?include=", files=files).json()


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    out = tmp_path_factory.mktemp("batch")
    images = str(FIXTURE_BCD / "images")
    pattern = str(FIXTURE_BCCD / "JPEGImages" / "BloodImage_0000[01].jpg")
    code = main(
        [
            "segment",
            images,
            pattern,
            "--out",
            str(out),
            "--workers",
            "2",
            "--format",
            "csv,geojson,rois,overlay",
        ]
    )
    assert code == 0
    return out


def test_tables_hold_every_image_and_cell_with_the_services_counts(batch, client):
    summary = read_csv(batch / "summary.csv")
    assert len(summary) == 8
    classes = [c["name"] for c in client.get("/model").json()["classes"][1:]]
    assert list(summary[0]) == [
        "image",
        *classes,
        "scale",
        "rbc_diameter_px",
        "scale_source",
        "rbc_median_diameter_px",
        "rbc_diameter_cv",
        "field_of_view",
        "warnings",
        "error",
    ]
    cells = read_csv(batch / "cells.csv")
    assert list(cells[0]) == [
        "image",
        "id",
        "label",
        "x_min",
        "y_min",
        "x_max",
        "y_max",
        "centroid_x",
        "centroid_y",
        "area",
        "score",
        "diameter",
        "on_border",
    ]
    for row in summary:
        body = service_result(client, Path(row["image"]))
        counts = body["counts"]
        assert {name: int(row[name]) for name in classes} == counts
        assert row["error"] == "" and float(row["scale"]) == body["scale"]
        assert float(row["rbc_diameter_px"]) == body["rbc_diameter_px"]
        assert row["scale_source"] == "estimated"
        sizes = body["rbc_sizes"] or {}
        assert row["rbc_median_diameter_px"] == str(sizes.get("median_diameter_px", ""))
        assert row["rbc_diameter_cv"] == str(sizes.get("diameter_cv", ""))
        assert float(row["field_of_view"]) == body["field_of_view"] == 1.0
        assert row["warnings"] == "; ".join(w["code"] for w in body["warnings"])
        assert sum(c["image"] == row["image"] for c in cells) == sum(counts.values())


def test_exports_are_written_and_read_back(batch):
    name = "image-2.png"
    overlay = Image.open(batch / "overlays" / f"{name}.png")
    assert overlay.size == (256, 256)
    collection = json.loads((batch / "geojson" / f"{name}.geojson").read_text())
    assert collection["type"] == "FeatureCollection" and collection["features"]
    rois = roifile.roiread(batch / "rois" / f"{name}.zip")
    assert len(rois) == len(collection["features"])


def test_a_second_run_skips_finished_images_unless_forced(batch, capsys):
    before = (batch / "results" / "image-2.png.json").stat().st_mtime_ns
    images = str(FIXTURE_BCD / "images")
    assert main(["segment", images, "--out", str(batch), "--format", "csv,overlay"]) == 0
    assert "0 segmented, 6 already done" in capsys.readouterr().err
    assert (batch / "results" / "image-2.png.json").stat().st_mtime_ns == before
    assert len(read_csv(batch / "summary.csv")) == 6  # the images of this run
    assert main(["segment", images, "--out", str(batch), "--force"]) == 0
    err = capsys.readouterr().err
    assert "6 segmented, 0 already done" in err and "100%" in err  # the progress bar
    assert (batch / "results" / "image-2.png.json").stat().st_mtime_ns > before


def test_a_run_resumed_over_an_older_versions_results_still_writes_its_tables(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(FIXTURE_BCD / "images" / "image-2.png", folder)
    out = tmp_path / "out"
    assert main(["segment", str(folder), "--out", str(out)]) == 0
    # a result as versions before the RBC sizes and the cells' diameter and on_border wrote it
    result = out / "results" / "image-2.png.json"
    record = json.loads(result.read_text())
    del record["rbc_sizes"]
    for cell in record["cells"]:
        del cell["diameter"], cell["on_border"]
    result.write_text(json.dumps(record))
    assert main(["segment", str(folder), "--out", str(out)]) == 0
    assert "0 segmented, 1 already done" in capsys.readouterr().err
    cells = read_csv(out / "cells.csv")
    assert len(cells) == len(record["cells"]) and {c["diameter"] for c in cells} == {""}
    [row] = read_csv(out / "summary.csv")
    assert row["rbc_median_diameter_px"] == "" and int(row["rbc"]) == record["counts"]["rbc"]


def test_an_unreadable_file_is_reported_and_the_rest_go_on(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(FIXTURE_BCD / "images" / "image-2.png", folder)
    (folder / "broken.png").write_bytes(b"not an image at all")
    assert main(["segment", str(folder), "--out", str(tmp_path / "out")]) == 1
    assert "failed:" in capsys.readouterr().err
    rows = {Path(r["image"]).name: r for r in read_csv(tmp_path / "out" / "summary.csv")}
    assert "decode" in rows["broken.png"]["error"] and rows["broken.png"]["rbc"] == ""
    assert int(rows["image-2.png"]["rbc"]) > 10 and rows["image-2.png"]["error"] == ""


@pytest.mark.slow
def test_remote_mode_gives_the_same_tables(batch, tmp_path):
    with running_server() as base:
        bloodseg = Path(sys.executable).parent / "bloodseg"  # the installed console script
        done = subprocess.run(
            [
                str(bloodseg),
                "segment",
                str(FIXTURE_BCD / "images"),
                "--url",
                base,
                "--out",
                str(tmp_path),
                "--format",
                "csv,rois",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr
    remote = read_csv(tmp_path / "summary.csv")
    local = {r["image"]: r for r in read_csv(batch / "summary.csv")}
    for row in remote:
        assert row["rbc"] == local[row["image"]]["rbc"] and row["wbc"] == local[row["image"]]["wbc"]
    assert roifile.roiread(tmp_path / "rois" / "image-2.png.zip")


@pytest.mark.slow
@pytest.mark.datasets
def test_the_whole_blood_cell_detection_folder(tmp_path, client):
    assert main(["segment", str(BCD / "images"), "--out", str(tmp_path), "--workers", "2"]) == 0
    summary = read_csv(tmp_path / "summary.csv")
    assert len(summary) == 80
    for row in summary:
        counts = service_result(client, Path(row["image"]))["counts"]
        assert (int(row["rbc"]), int(row["wbc"])) == (counts["rbc"], counts["wbc"])
    assert len(read_csv(tmp_path / "cells.csv")) > 80 * 15


@pytest.mark.slow
def test_bloodseg_serve_starts_the_service():
    from tests.conftest import start_server, wait_http_ready

    bloodseg = Path(sys.executable).parent / "bloodseg"
    server, base = start_server(command=[str(bloodseg), "serve"])
    try:
        wait_http_ready(server, base)
        assert httpx.get(f"{base}/readyz").json()["status"] == "ready"
    finally:
        server.terminate()
        server.wait(timeout=30)
