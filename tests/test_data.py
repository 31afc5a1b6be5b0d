"""The three dataset layouts, on the real files and on malformed copies."""

import csv
import logging
import shutil

import pytest

from tests.conftest import BCCD, BCD, FIXTURE_BCCD, FIXTURE_BCD, FIXTURES, TXL_PBC
from training.data import DataError, load_dataset, median_rbc_diameter, split_dataset


def test_kaggle_layout_reads_every_box():
    images = load_dataset(FIXTURE_BCD)
    assert len(images) == 6
    assert sum(len(i.boxes) for i in images) == 134  # the fixture's annotation rows
    assert all(i.width == 256 and i.height == 256 for i in images)
    assert 45 < median_rbc_diameter(images) < 60


@pytest.mark.datasets
def test_the_full_kaggle_dataset_reads_every_box():
    images = load_dataset(BCD)
    assert len(images) == 80
    assert sum(len(i.boxes) for i in images) == 1869
    assert not images[0].platelets_complete  # it never boxes a platelet: they are unlabelled
    assert 45 < median_rbc_diameter(images) < 60


def test_voc_layout_skips_degenerate_boxes_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        images = load_dataset(FIXTURE_BCCD, rbc_complete=False)
    assert len(images) == 4 and not images[0].rbc_complete
    assert "BloodImage_00338.xml object 13: empty or inverted box" in caplog.text
    labels = {b.label for i in images for b in i.boxes}
    assert labels == {"rbc", "wbc"}
    with pytest.raises(DataError, match=r"BloodImage_00338\.xml object 13"):
        load_dataset(FIXTURE_BCCD, strict=True)


def test_splits_are_seeded_or_published_on_the_fixtures():
    images = load_dataset(FIXTURE_BCD)
    val = split_dataset(FIXTURE_BCD, images, "val", 0.5, seed=7)
    train = split_dataset(FIXTURE_BCD, images, "train", 0.5, seed=7)
    assert len(val) == len(train) == 3
    assert not {i.path for i in val} & {i.path for i in train}
    assert val == split_dataset(FIXTURE_BCD, images, "val", 0.5, seed=7)
    bccd = load_dataset(FIXTURE_BCCD)
    assert [i.path.stem for i in split_dataset(FIXTURE_BCCD, bccd, "val", 0.5, seed=7)] == [
        "BloodImage_00000",
        "BloodImage_00002",
        "BloodImage_00338",
    ]  # ImageSets/Main/val.txt, whatever the fraction


@pytest.mark.datasets
def test_splits_are_seeded_or_published():
    images = load_dataset(BCD)
    val = split_dataset(BCD, images, "val", 0.2, seed=7)
    train = split_dataset(BCD, images, "train", 0.2, seed=7)
    assert len(val) == 16 and len(train) == 64
    assert not {i.path for i in val} & {i.path for i in train}
    assert val == split_dataset(BCD, images, "val", 0.2, seed=7)
    assert val != split_dataset(BCD, images, "val", 0.2, seed=8)
    bccd_val = split_dataset(BCCD, load_dataset(BCCD), "val", 0.2, seed=7)
    assert len(bccd_val) == 87  # ImageSets/Main/val.txt


@pytest.fixture
def broken_kaggle(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("image-11.png", "image-10.png"):
        shutil.copy(FIXTURE_BCD / "images" / name, tmp_path / "images" / name)
    rows = [
        ["image", "xmin", "ymin", "xmax", "ymax", "label"],
        ["image-11.png", "10", "10", "60", "60", "rbc"],
        ["image-11.png", "ten", "10", "60", "60", "rbc"],
        ["image-11.png", "10", "10", "60", "60", "platelet-ish"],
        ["image-11.png", "200", "200", "400", "260", "wbc"],
        ["image-11.png", "60", "10", "10", "60", "rbc"],
        ["missing.png", "10", "10", "60", "60", "rbc"],
        ["image-10.png", "0", "0", "256.5", "40", "wbc"],
    ]
    with (tmp_path / "annotations.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return tmp_path


def test_malformed_rows_are_named_and_skipped(broken_kaggle, caplog):
    with caplog.at_level(logging.WARNING):
        images = load_dataset(broken_kaggle)
    by_name = {i.path.name: i for i in images}
    assert len(by_name["image-11.png"].boxes) == 1
    assert by_name["image-10.png"].boxes[0].x_max == 256  # within tolerance: clipped
    for row, message in [
        (3, "non-numeric"),
        (4, "unknown label"),
        (5, "outside"),
        (6, "inverted"),
        (7, "missing or unreadable"),
    ]:
        assert f"annotations.csv row {row}: " in caplog.text
        assert message in caplog.text
    with pytest.raises(DataError, match="row 3: non-numeric"):
        load_dataset(broken_kaggle, strict=True)


def test_malformed_voc_xml_is_named(tmp_path, caplog):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    shutil.copy(FIXTURE_BCCD / "JPEGImages" / "BloodImage_00000.jpg", tmp_path / "JPEGImages")
    shutil.copy(FIXTURE_BCCD / "Annotations" / "BloodImage_00000.xml", tmp_path / "Annotations")
    (tmp_path / "Annotations" / "BloodImage_00001.xml").write_text("<annotation><object>")
    with caplog.at_level(logging.WARNING):
        images = load_dataset(tmp_path)
    assert len(images) == 1 and len(images[0].boxes) == 20
    assert "BloodImage_00001.xml: malformed XML" in caplog.text


def test_unknown_layout_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"none of .*annotations\.csv.*Annotations/.*data\.yaml"):
        load_dataset(tmp_path)


FIXTURE_TXL = FIXTURES / "txl-pbc"


def test_yolo_layout_reads_normalised_boxes_and_its_folder_split():
    images = load_dataset(FIXTURE_TXL)
    assert len(images) == 4
    by_name = {i.path.stem: i for i in images}
    bccd = by_name["e980dd0e-c7cb-5990-ac8a-e3384c2b2d71"]  # a 640x480 BCCD image
    assert (bccd.width, bccd.height) == (640, 480)
    labels = [b.label for b in bccd.boxes]
    assert labels.count("wbc") == 1 and labels.count("rbc") == 9
    assert labels.count("platelet") == 2 and bccd.platelets_complete
    label_file = FIXTURE_TXL / "labels" / "train" / f"{bccd.path.stem}.txt"
    _, cx, cy, w, h = (float(v) for v in label_file.read_text().splitlines()[0].split())
    box = bccd.boxes[0]
    assert box.x_min == pytest.approx((cx - w / 2) * 640) and box.y_max == pytest.approx(
        (cy + h / 2) * 480
    )
    train = split_dataset(FIXTURE_TXL, images, "train", 0.2, 7)
    val = split_dataset(FIXTURE_TXL, images, "val", 0.2, 7)
    assert {i.path.parent.name for i in train} == {"train"} and len(train) == 2
    assert {i.path.parent.name for i in val} == {"val"} and len(val) == 2


def test_malformed_yolo_lines_are_named_and_skipped(tmp_path, caplog):
    root = tmp_path / "yolo"
    shutil.copytree(FIXTURE_TXL, root)
    label = next((root / "labels" / "val").glob("*.txt"))
    kept = len(label.read_text().splitlines())
    label.write_text(label.read_text() + "7 0.5 0.5 0.1 0.1\n1 0.5 x 0.1 0.1\n1 0.5\n")
    unlabelled = next((root / "labels" / "train").glob("*.txt"))
    unlabelled.unlink()  # YOLO's background image: no label file, no cells
    with caplog.at_level(logging.WARNING):
        images = {i.path.stem: i for i in load_dataset(root)}
    assert f"{label.name} line {kept + 1}: not 'class cx cy w h'" in caplog.text
    assert f"{label.name} line {kept + 2}: non-numeric box" in caplog.text
    assert f"{label.name} line {kept + 3}: not 'class cx cy w h'" in caplog.text
    assert images[unlabelled.stem].boxes == ()
    with pytest.raises(DataError, match=f"{label.name} line {kept + 1}"):
        load_dataset(root, strict=True)


@pytest.mark.datasets
def test_the_full_yolo_dataset_has_complete_bccd_labels():
    root = TXL_PBC
    images = load_dataset(root)
    assert len(images) == 1249
    assert len(split_dataset(root, images, "val", 0.2, 7)) == 275
    bccd = [i for i in images if (i.width, i.height) == (640, 480)]
    rbc_per_image = sum(b.label == "rbc" for i in bccd for b in i.boxes) / len(bccd)
    assert 20 < rbc_per_image < 26  # against about 11 in BCCD's own boxes
    assert 95 < median_rbc_diameter(bccd) < 115
