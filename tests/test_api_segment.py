"""POST /segment on the real shipped model and real images."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from app.inference.cpu_features import cpu_flags, runs_int8_exactly
from app.inference.metadata import read_metadata, resolve_model_dir
from app.inference.preprocess import place_in_tile
from tests.conftest import FIXTURE_BCCD as BCCD
from tests.conftest import FIXTURE_BCD as BCD
from tests.conftest import SHIPPED_MODEL, make_client, wait_ready
from training.data import load_dataset, median_rbc_diameter
from training.quantize import INT8_FILE

BCD_IMAGE = "image-2.png"


@pytest.fixture(scope="module")
def annotations():
    return {i.path.name: i for i in load_dataset(BCD)}


def post(client, path: str, data: bytes, name: str = "smear.png", **kwargs):
    return client.post(path, files={"image": (name, data, "application/octet-stream")}, **kwargs)


def png_of(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(text: str) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(base64.b64decode(text))))


def test_counts_are_close_to_the_annotations(client, annotations):
    for name in (BCD_IMAGE, "image-4.png", "image-7.png"):
        response = post(client, "/segment", (BCD / "images" / name).read_bytes())
        assert response.status_code == 200
        body = response.json()
        truth = annotations[name].boxes
        true_rbc = sum(b.label == "rbc" for b in truth)
        assert abs(body["counts"]["rbc"] - true_rbc) <= max(4, 0.2 * true_rbc)
        assert body["counts"]["wbc"] == sum(b.label == "wbc" for b in truth)
        assert body["model"]["provider"] == "CPUExecutionProvider"
        # sent with no hint: the magnification is estimated, and said so
        assert body["scale_source"] == "estimated"
        true_diameter = median_rbc_diameter([annotations[name]])
        assert abs(body["rbc_diameter_px"] / true_diameter - 1) < 0.2
        assert body["scale"] == pytest.approx(
            model_diameter(client) / body["rbc_diameter_px"], rel=1e-3
        )
        assert isinstance(body["warnings"], list)
        stages = {"decode", "estimate_scale", "preprocess", "inference", "postprocess"}
        # more passes, when the cells found at the estimate measured far off it (or the network
        # was unsure of their centres there): the earlier ones show as first_pass
        assert body["scale_passes"] >= 1 + body["scale_refined"]
        expected = (
            stages | {"encode", "total"} | ({"first_pass"} if body["scale_passes"] > 1 else set())
        )
        assert set(body["timings_ms"]) == expected


def test_a_server_asked_for_int8_runs_it_where_the_cpu_can_and_counts_alike(annotations):
    """BLOODSEG_PRECISION=int8: the int8 copy on a CPU with VNNI (model.onnx elsewhere), and
    the counts stay near the boxes as float32's do."""
    expected = INT8_FILE if runs_int8_exactly(cpu_flags()) else "model.onnx"
    with make_client(precision="int8") as int8_client:
        wait_ready(int8_client)
        assert int8_client.get("/model").json()["model_file"] == expected
        for name in (BCD_IMAGE, "image-4.png"):
            body = post(int8_client, "/segment", (BCD / "images" / name).read_bytes()).json()
            truth = annotations[name].boxes
            true_rbc = sum(b.label == "rbc" for b in truth)
            assert abs(body["counts"]["rbc"] - true_rbc) <= max(4, 0.2 * true_rbc)
            assert body["counts"]["wbc"] == sum(b.label == "wbc" for b in truth)


def model_diameter(client) -> float:
    """The RBC diameter the model runs at: scale 1 means the image's RBCs are this size."""
    return client.get("/model").json()["working_rbc_diameter_px"]


def test_a_given_scale_is_used_as_given(client):
    data = (BCD / "images" / BCD_IMAGE).read_bytes()
    body = post(client, "/segment?include=&scale=1", data).json()
    assert body["scale"] == 1 and body["scale_source"] == "given"
    assert body["rbc_diameter_px"] == pytest.approx(model_diameter(client), abs=0.01)
    assert "estimate_scale" not in body["timings_ms"]


def test_pictures_match_the_input_size_and_the_cells(client):
    body = post(client, "/segment", (BCD / "images" / BCD_IMAGE).read_bytes()).json()
    assert body["image"] == {"width": 256, "height": 256}
    mask, instances, overlay = (decode_png(body[k]) for k in ("mask", "instances", "overlay"))
    assert mask.shape == instances.shape == (256, 256) and overlay.shape == (256, 256, 3)
    assert instances.dtype == np.uint16 and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1, 2, 3}
    assert sorted(c["id"] for c in body["cells"]) == sorted(set(np.unique(instances)) - {0})
    assert sum(c["label"] == "rbc" for c in body["cells"]) == body["counts"]["rbc"]
    for cell in body["cells"]:
        pixels = instances == cell["id"]
        assert pixels.sum() == cell["area"]
        assert (mask[pixels] == {"rbc": 1, "wbc": 2, "platelet": 3}[cell["label"]]).all()
        ys, xs = np.nonzero(pixels)
        assert cell["bbox"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert 0 < cell["score"] <= 1
        x_min, y_min, x_max, y_max = cell["bbox"]
        assert cell["diameter"] == (x_max - x_min + y_max - y_min) / 2
        height, width = instances.shape
        reaches = xs.min() == 0 or ys.min() == 0 or xs.max() == width - 1 or ys.max() == height - 1
        assert cell["on_border"] == reaches
    # a smear cut from a larger field: cells on both sides of the border question
    assert {c["on_border"] for c in body["cells"]} == {True, False}
    # the RBC size distribution is of the RBCs the border does not cut
    inside = [c["diameter"] for c in body["cells"] if c["label"] == "rbc" and not c["on_border"]]
    sizes = body["rbc_sizes"]
    assert sizes["cells"] == len(inside) >= 5
    assert sizes["median_diameter_px"] == pytest.approx(np.median(inside), abs=0.005)
    assert sizes["diameter_cv"] == pytest.approx(np.std(inside) / np.mean(inside), abs=5e-5)
    # calibrated extents: the median RBC measures close to the diameter the scale implies
    assert sizes["median_diameter_px"] == pytest.approx(body["rbc_diameter_px"], rel=0.1)


def test_include_selects_pictures(client):
    data = (BCD / "images" / BCD_IMAGE).read_bytes()
    body = post(client, "/segment?include=mask", data).json()
    assert body["mask"] and body["instances"] is None and body["overlay"] is None
    empty = post(client, "/segment?include=", data).json()
    assert empty["mask"] is None and empty["counts"] == body["counts"]
    assert post(client, "/segment?include=mask,heatmap", data).status_code == 422


def test_accept_png_returns_the_overlay(client):
    data = (BCD / "images" / BCD_IMAGE).read_bytes()
    counts = post(client, "/segment", data).json()["counts"]
    response = post(client, "/segment", data, headers={"Accept": "image/png"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (256, 256)
    body = post(client, "/segment?include=", data).json()
    assert int(response.headers["X-Count-RBC"]) == counts["rbc"]
    assert int(response.headers["X-Count-WBC"]) == counts["wbc"]
    if "platelet" in counts:
        assert int(response.headers["X-Count-Platelet"]) == counts["platelet"]
    assert response.headers["X-Scale-Source"] == "estimated"
    assert float(response.headers["X-Scale"]) == body["scale"]
    assert float(response.headers["X-RBC-Diameter-Px"]) == body["rbc_diameter_px"]
    median = float(response.headers["X-RBC-Median-Diameter-Px"])
    assert median == body["rbc_sizes"]["median_diameter_px"]
    assert response.headers["X-Warnings"] == ",".join(w["code"] for w in body["warnings"])


def test_too_few_rbcs_clear_of_the_border_have_no_size_distribution(client):
    # a corner of a smear: a few cells, every one cut by the border
    image = Image.open(BCD / "images" / BCD_IMAGE).crop((0, 0, 72, 72))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    body = post(client, "/segment?include=&rbc_diameter=54", data).json()
    clear = [c for c in body["cells"] if c["label"] == "rbc" and not c["on_border"]]
    assert len(clear) < 5 and body["rbc_sizes"] is None
    png = post(client, "/segment?rbc_diameter=54", data, headers={"Accept": "image/png"})
    assert png.status_code == 200 and png.headers["X-RBC-Median-Diameter-Px"] == ""


def segment_bccd_image(client) -> dict:
    data = (BCCD / "JPEGImages" / "BloodImage_00000.jpg").read_bytes()
    return post(client, "/segment?rbc_diameter=104", data, name="a.jpg").json()


def test_bccd_image_at_its_own_magnification(client):
    body = segment_bccd_image(client)
    assert body["image"] == {"width": 640, "height": 480}
    assert body["scale"] == pytest.approx(model_diameter(client) / 104, rel=1e-4)
    assert body["counts"]["wbc"] == 1
    assert body["counts"]["rbc"] >= 19  # at least the RBCs BCCD boxes in this image
    assert decode_png(body["mask"]).shape == (480, 640)


def test_bccd_rbc_count_is_near_a_hand_count(client):
    # 1.1.x split some large BCCD RBCs in two here (41 found); 2.x, trained on TXL-PBC's
    # complete boxes of these images, does not
    # BCCD boxes 19 of this image's RBCs; counted by eye, including border cells, it holds
    # about 28 (+-3). Allow a generous 40.
    assert segment_bccd_image(client)["counts"]["rbc"] <= 40


def test_a_cell_on_a_tile_border_is_counted_once(annotations):
    """A real WBC placed across the seam of two inference tiles in a 256x700 image, on a
    service that runs tiles (BLOODSEG_MAX_WINDOW_PIXELS=0, as CUDA and large images do).

    The image is a window on a strip of real smears (image-2 second), so that every pixel is
    real content: a flat fill would skew the per-image normalisation and test that instead.
    It is sent at the model's own scale (image-2's RBC diameter given), where the service
    segments it, and the seam is found where the tiles fall at that scale: the first tile's
    right edge, less the band the model asks for around the image.
    """
    names = ("image-4.png", BCD_IMAGE, "image-7.png", "image-10.png")
    strip = np.hstack([np.array(Image.open(BCD / "images" / n).convert("RGB")) for n in names])
    (wbc,) = [b for b in annotations[BCD_IMAGE].boxes if b.label == "wbc"]
    metadata = read_metadata(resolve_model_dir(SHIPPED_MODEL) / "model.json")
    diameter = median_rbc_diameter([annotations[BCD_IMAGE]])
    scale = metadata.working_rbc_diameter_px / diameter
    network = np.zeros((round(256 * scale), round(700 * scale), 1), np.float32)
    spec = metadata.input
    _, _, band = place_in_tile(network, spec.tile_size, spec.size_multiple, spec.edge_border_px)
    seam = (spec.tile_size - band) / scale  # the first tile's right edge, in image pixels
    assert 256 < seam < 700 - 128

    def segment_with_image_at(left: int) -> tuple[list[dict], list[dict]]:
        """The WBCs over image-2's WBC and the RBCs inside image-2, image-2 at x=left."""
        window = png_of(strip[:, 256 - left : 956 - left])
        body = post(client, f"/segment?rbc_diameter={diameter}", window).json()
        assert body["scale"] == pytest.approx(scale, abs=1e-3)
        wbc_x = (left + wbc.x_min, left + wbc.x_max)
        wbcs = [
            c
            for c in body["cells"]
            if c["label"] == "wbc" and c["bbox"][0] < wbc_x[1] and c["bbox"][2] > wbc_x[0]
        ]
        rbcs = [
            c
            for c in body["cells"]
            if c["label"] == "rbc" and left + 10 <= c["centroid"][0] < left + 246
        ]
        return wbcs, rbcs

    with make_client(max_window_pixels=0) as client:
        wait_ready(client)
        across_wbcs, across_rbcs = segment_with_image_at(round(seam - (wbc.x_min + wbc.x_max) / 2))
        inside_wbcs, inside_rbcs = segment_with_image_at(0)  # image-2 inside the first tile
    assert len(across_wbcs) == 1
    assert across_wbcs[0]["bbox"][0] < seam - 20 and across_wbcs[0]["bbox"][2] > seam + 20
    assert len(inside_wbcs) == 1
    assert abs(across_wbcs[0]["area"] - inside_wbcs[0]["area"]) < 0.1 * inside_wbcs[0]["area"]
    assert abs(len(across_rbcs) - len(inside_rbcs)) <= 2


def test_scale_resamples_and_reports_in_input_pixels(client):
    image = np.array(Image.open(BCD / "images" / BCD_IMAGE).convert("RGB"))
    big = np.array(Image.fromarray(image).resize((512, 512), Image.Resampling.BILINEAR))
    body = post(client, "/segment?scale=0.5", png_of(big)).json()
    assert body["image"] == {"width": 512, "height": 512} and body["scale"] == 0.5
    assert decode_png(body["mask"]).shape == (512, 512)
    alone = post(client, "/segment?scale=1", png_of(image)).json()
    assert body["counts"]["wbc"] == alone["counts"]["wbc"]
    assert abs(body["counts"]["rbc"] - alone["counts"]["rbc"]) <= 3


def paste_wbc(canvas: np.ndarray, source: np.ndarray, box, left: int, top: int) -> None:
    """Paste the ellipse inscribed in a WBC's box from `source` onto `canvas` at (left, top)."""
    x0, y0, x1, y1 = (round(v) for v in (box.x_min, box.y_min, box.x_max, box.y_max))
    crop = source[y0:y1, x0:x1]
    ys, xs = np.mgrid[0 : y1 - y0, 0 : x1 - x0]
    inside = ((ys + 0.5 - (y1 - y0) / 2) / ((y1 - y0) / 2)) ** 2 + (
        (xs + 0.5 - (x1 - x0) / 2) / ((x1 - x0) / 2)
    ) ** 2 <= 1.0
    region = canvas[top : top + y1 - y0, left : left + x1 - x0]
    region[inside] = crop[inside]


def test_two_touching_wbcs_are_two_cells_and_one_stays_one(client, annotations):
    """Two copies of image-4's real WBC (a lobed nucleus), pasted side by side and touching
    onto image-10, a real smear with no WBC of its own."""
    source = np.array(Image.open(BCD / "images" / "image-4.png").convert("RGB"))
    (wbc,) = [b for b in annotations["image-4.png"].boxes if b.label == "wbc"]
    width = round(wbc.x_max) - round(wbc.x_min)
    smear = np.array(Image.open(BCD / "images" / "image-10.png").convert("RGB"))

    one = smear.copy()
    paste_wbc(one, source, wbc, 80, 80)
    single = post(client, "/segment?include=&rbc_diameter=54", png_of(one)).json()
    assert single["counts"]["wbc"] == 1

    two = smear.copy()
    paste_wbc(two, source, wbc, 40, 80)
    paste_wbc(two, source, wbc, 40 + width - 6, 80)  # the two cells overlap by 6 px
    body = post(client, "/segment?include=&rbc_diameter=54", png_of(two)).json()
    assert body["counts"]["wbc"] == 2
    centres = sorted(c["centroid"][0] for c in body["cells"] if c["label"] == "wbc")
    expected = [40 + width / 2, 40 + width - 6 + width / 2]
    assert all(abs(c - e) < width / 4 for c, e in zip(centres, expected, strict=True))
