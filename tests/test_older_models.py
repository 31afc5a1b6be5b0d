"""A 1.x model (no platelet class, one WBC per region) is still served as it was trained."""

import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FIXTURE_BCD, ROOT, make_client, wait_ready
from training.data import load_dataset

OLDER = ROOT / "models" / "bloodseg" / "1.1.1"


@pytest.fixture(scope="module")
def older_client():
    with make_client(model_dir=OLDER) as client:
        wait_ready(client)
        yield client


def test_a_1x_model_counts_its_own_classes_only(older_client):
    assert older_client.get("/model").json()["version"] == "1.1.1"
    truth = {i.path.name: i for i in load_dataset(FIXTURE_BCD)}["image-2.png"]
    data = (FIXTURE_BCD / "images" / "image-2.png").read_bytes()
    # at its own training scale (blood-cell-detection's): what 1.1.1 always answered
    response = older_client.post(
        "/segment?include=mask&scale=1", files={"image": ("a.png", data, "image/png")}
    )
    body = response.json()
    assert set(body["counts"]) == {"rbc", "wbc"}
    assert {c["label"] for c in body["cells"]} == {"rbc", "wbc"}
    true_rbc = sum(b.label == "rbc" for b in truth.boxes)
    assert abs(body["counts"]["rbc"] - true_rbc) <= 4 and body["counts"]["wbc"] == 1
    import base64

    mask = Image.open(io.BytesIO(base64.b64decode(body["mask"])))
    assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 1, 2}
    png = older_client.post(
        "/segment", files={"image": ("a.png", data, "image/png")}, headers={"Accept": "image/png"}
    )
    assert "X-Count-Platelet" not in png.headers and png.headers["X-Scale-Source"] == "estimated"
