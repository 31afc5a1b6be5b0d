"""The web page in a real browser: Playwright driving Debian's Chromium against the real server.

Outside CI the tests skip when no Chromium is found; under CI=true they fail instead.
"""

import csv
import io
import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.conftest import FIXTURE_BCD, IN_CI, ROOT, running_server

pytestmark = pytest.mark.slow

SCREENSHOT = ROOT / "docs" / "web-page.png"
SMEAR = FIXTURE_BCD / "images" / "image-2.png"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = os.environ.get("BLOODSEG_CHROMIUM") or shutil.which("chromium")
    if path is None:
        reason = "no Chromium found (apt-get install chromium, or set BLOODSEG_CHROMIUM)"
        if IN_CI:
            pytest.fail(f"CI=true: {reason}", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def server():
    with running_server() as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(server + "/")
    page.problems = problems
    yield page
    context.close()


def service_result(server: str) -> dict:
    files = {"image": ("image-2.png", SMEAR.read_bytes())}
    return httpx.post(f"{server}/segment?include=", files=files, timeout=60).json()


def test_upload_shows_the_services_counts_cells_and_pictures(page, server):
    page.get_by_label("Choose or drop blood-smear images").set_input_files(str(SMEAR))
    rbc = page.get_by_test_id("count-rbc")
    rbc.wait_for(timeout=60_000)
    result = service_result(server)
    expected = result["counts"]
    assert int(rbc.inner_text()) == expected["rbc"]
    assert int(page.get_by_test_id("count-wbc").inner_text()) == expected["wbc"]
    rows = page.locator("table.cells tbody tr")
    assert rows.count() == expected["rbc"] + expected["wbc"]
    working = httpx.get(f"{server}/model", timeout=10).json()["working_rbc_diameter_px"]
    # the scale the network is run at, not the training scale
    assert f"works at RBCs of {working:g} px" in page.locator("#training-scale").inner_text()
    magnification = page.get_by_test_id("magnification").inner_text()
    assert "estimated from the image" in magnification
    sizes = result["rbc_sizes"]
    assert f"median {sizes['median_diameter_px']:.1f} px" in magnification
    assert f"over {sizes['cells']} away from the border" in magnification

    view = page.locator("img.view")
    assert "base64" in view.get_attribute("src")
    page.get_by_label("original").check()
    assert view.get_attribute("src").startswith("blob:")
    page.get_by_label("mask").check()
    assert view.get_attribute("src").startswith("data:image/png")
    page.get_by_label("overlay").check()

    page.get_by_role("columnheader", name="area").click()
    areas = [int(a) for a in page.locator("table.cells tbody tr td:nth-child(9)").all_inner_texts()]
    assert areas == sorted(areas)
    page.get_by_role("columnheader", name="area").click()
    areas = [int(a) for a in page.locator("table.cells tbody tr td:nth-child(9)").all_inner_texts()]
    assert areas == sorted(areas, reverse=True)

    with page.expect_download() as done:
        page.get_by_role("button", name="Cells CSV").click()
    table = list(csv.DictReader(io.StringIO(Path(done.value.path()).read_text())))
    assert len(table) == rows.count() and table[0]["image"] == "image-2.png"
    with page.expect_download() as done:
        page.get_by_role("button", name="GeoJSON (QuPath)").click()
    assert '"FeatureCollection"' in Path(done.value.path()).read_text()
    with page.expect_download() as done:
        page.get_by_role("button", name="Mask PNG").click()
    assert Path(done.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.evaluate("document.querySelector('.table-wrap').scrollLeft = 0")
    page.screenshot(path=str(SCREENSHOT), full_page=False)
    assert page.problems == []


def test_a_given_diameter_is_used_and_shown(page, server):
    page.get_by_label("RBC diameter in your images (pixels)").fill("80")
    page.get_by_label("Choose or drop blood-smear images").set_input_files(str(SMEAR))
    magnification = page.get_by_test_id("magnification")
    magnification.wait_for(timeout=60_000)
    page.get_by_test_id("count-rbc").wait_for()
    assert "given: RBCs of 80.0 px" in magnification.inner_text()
    assert page.problems == []


def test_an_eyepiece_photo_says_its_surround_was_left_out(page, server, tmp_path):
    from PIL import Image

    from app.inference.decode import load_image
    from tests.test_field_of_view import eyepiece

    photo = tmp_path / "eyepiece.png"
    Image.fromarray(eyepiece(load_image(SMEAR))).save(photo)
    page.get_by_label("Choose or drop blood-smear images").set_input_files(str(photo))
    magnification = page.get_by_test_id("magnification")
    magnification.wait_for(timeout=60_000)
    page.get_by_test_id("count-rbc").wait_for()
    text = magnification.inner_text()
    assert "outside the microscope's field of view (24 % of the image)" in text
    assert page.problems == []


def test_api_errors_read_as_messages(page, tmp_path):
    broken = tmp_path / "notes.png"
    broken.write_text("these are not pixels")
    page.get_by_label("Choose or drop blood-smear images").set_input_files(str(broken))
    status = page.locator(".status.error")
    status.wait_for(timeout=30_000)
    assert "not a recognised image format" in status.inner_text()
    assert "HTTP 415" in status.inner_text()


def test_phone_width_has_no_sideways_scrolling(browser, server):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    page.goto(server + "/")
    page.get_by_label("Choose or drop blood-smear images").set_input_files(str(SMEAR))
    page.get_by_test_id("count-rbc").wait_for(timeout=60_000)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    context.close()
