"""Tiling, merging and instance finding on constructed inputs."""

import itertools

import numpy as np
import pytest

from app.inference.metadata import (
    DEFAULT_CLASSES,
    Counting,
    InputSpec,
    ModelMetadata,
    OutputSpec,
)
from app.inference.postprocess import (
    WIDEN_STEPS,
    Instances,
    class_map,
    class_mask,
    describe_cells,
    find_instances,
    resize_instances,
)
from app.inference.preprocess import (
    EDGE_INSET_PX,
    blend_weights,
    normalize_image,
    pad_to_tile,
    padded_size,
    place_in_tile,
    tile_windows,
    window_starts,
)
from tests.conftest import constructed_metadata


def metadata(**counting) -> ModelMetadata:
    return ModelMetadata(
        name="t",
        version="0",
        classes=DEFAULT_CLASSES,
        input=InputSpec(),
        output=OutputSpec(channels=["background", "rbc", "wbc", "centre"]),
        rbc_diameter_px=40.0,
        counting=Counting(**counting),
    )


def test_windows_cover_the_image_with_the_overlap():
    assert window_starts(256, 256, 64) == [0]
    starts = window_starts(700, 256, 64)
    assert starts[0] == 0 and starts[-1] == 700 - 256
    assert all(b - a <= 256 - 64 for a, b in itertools.pairwise(starts))
    assert len(tile_windows(700, 300, 256, 64)) == len(starts) * 2


def test_blend_weights_taper_to_the_edges():
    w = blend_weights(256, 64)
    assert w[128, 128] == 1.0 and w[0, 0] < 0.01 and w[0, 128] < w[32, 128] < w[64, 128]


def test_an_edge_border_fills_only_the_room_the_padding_leaves():
    image = np.random.default_rng(1).normal(size=(166, 237, 3)).astype(np.float32)
    plain, top, left = place_in_tile(image, 256, 16)
    assert (top, left) == (0, 0) and np.array_equal(plain, pad_to_tile(image, 256, 16))

    placed, top, left = place_in_tile(image, 256, 16, edge_border=16)
    assert placed.shape[:2] == padded_size(166, 237, 256, 16) == (256, 256)
    assert (top, left) == (16, 9)  # 19 columns of room: 9 left, 10 right
    assert np.array_equal(placed[top : top + 166, left : left + 237], image)
    bottom, right = top + 166, left + 237
    inset = EDGE_INSET_PX
    # the band repeats the row and column EDGE_INSET_PX in from each border
    assert (placed[:top, left + inset : right - inset] == image[inset, inset:-inset]).all()
    assert (
        placed[bottom : bottom + 16, left + inset : right - inset]
        == image[-1 - inset, inset:-inset]
    ).all()
    assert (placed[top + inset : bottom - inset, :left] == image[inset:-inset, inset, None]).all()
    assert (
        placed[top + inset : bottom - inset, right:] == image[inset:-inset, -1 - inset, None]
    ).all()
    assert right + 10 == 256  # 10 columns of band fill the right
    assert not placed[bottom + 16 :].any()  # past the border: zeros, as before

    # a dark frame line around an image is not repeated into the band
    framed = image.copy()
    framed[0] = framed[-1] = framed[:, 0] = framed[:, -1] = -50.0
    banded, top, left = place_in_tile(framed, 256, 16, edge_border=16)
    assert (banded == -50.0).sum() == (framed == -50.0).sum()

    # an image already a whole number of tiles has no room: nothing is added, nothing moves
    whole = image[:160, :224]
    assert place_in_tile(whole, 128, 16, edge_border=16)[1:] == (0, 0)


def test_normalisation_is_per_channel_standardisation():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = normalize_image(image, InputSpec().normalization)
    assert np.allclose(out.mean(axis=(0, 1)), 0, atol=1e-5)
    assert np.allclose(out.std(axis=(0, 1)), 1, atol=1e-3)
    flat = normalize_image(np.full((8, 8, 3), 128, np.uint8), InputSpec().normalization)
    assert np.isfinite(flat).all()


def synthetic_probs(centres, wbc_box=None, size=(100, 160)):
    """Probabilities of overlapping round RBCs (radius 20) and an optional WBC square."""
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    probs = np.zeros((h, w, 4), np.float32)
    probs[..., 0] = 1
    for cy, cx in centres:
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= 20**2
        probs[inside, :3] = [0, 1, 0]
        gauss = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 6.0**2))
        probs[..., 3] = np.maximum(probs[..., 3], gauss)
    if wbc_box:
        y0, x0, y1, x1 = wbc_box
        probs[y0:y1, x0:x1, :3] = [0, 0, 1]
    return probs


def test_touching_rbcs_are_split_by_their_centre_peaks():
    meta = metadata()
    instances = find_instances(
        synthetic_probs([(50, 40), (50, 70), (50, 120)]), meta.counting, meta.layout
    )
    cells = describe_cells(instances, meta.layout)
    assert [c.label for c in cells] == ["rbc"] * 3
    owners = [instances.labels[50, x] for x in (40, 70, 120)]
    assert 0 not in owners and len(set(owners)) == 3  # each true centre in its own cell


def test_wbc_region_is_one_cell_and_small_fragments_are_dropped():
    meta = metadata()
    probs = synthetic_probs([(50, 30)], wbc_box=(20, 90, 80, 150))
    probs[5:8, 5:8, :3] = [0, 0, 1]  # 9 px of WBC noise: under the minimum area
    cells = describe_cells(find_instances(probs, meta.counting, meta.layout), meta.layout)
    assert sorted(c.label for c in cells) == ["rbc", "wbc"]
    wbc = next(c for c in cells if c.label == "wbc")
    assert wbc.bbox == (90, 20, 150, 80) and wbc.area == 3600 and wbc.score == 1.0


def test_holes_in_a_wbc_are_filled_but_a_platelet_on_its_rim_stays_a_platelet():
    """A platelet lying on a WBC's edge can be ringed by WBC pixels; it is still a platelet
    (2.2.4's int8 variant lost one so on BCCD), while a pale spot in a WBC is the WBC's."""
    meta = constructed_metadata()
    probs = np.zeros((100, 160, 5), np.float32)
    probs[..., 0] = 1
    probs[20:80, 60:120, :4] = [0, 0, 1, 0]  # a WBC
    probs[40:50, 70:80, :4] = [1, 0, 0, 0]  # a pale spot inside it
    probs[22:32, 95:105, :4] = [0, 0, 0, 1]  # a platelet, one WBC pixel from the background
    cells = describe_cells(find_instances(probs, meta.counting, meta.layout), meta.layout)
    assert sorted(c.label for c in cells) == ["platelet", "wbc"]
    wbc = next(c for c in cells if c.label == "wbc")
    platelet = next(c for c in cells if c.label == "platelet")
    assert wbc.area == 60 * 60 - 100 and platelet.area == 100
    assert platelet.bbox == (95, 22, 105, 32)


def test_a_platelet_less_sure_than_the_minimum_score_is_dropped_and_the_rest_renumbered():
    probs = synthetic_probs([(50, 30)], wbc_box=(20, 90, 80, 150))
    probs = np.concatenate([probs[..., :3], np.zeros((*probs.shape[:2], 1)), probs[..., 3:]], -1)
    probs[85:95, 10:20, :4] = [0.0, 0.0, 0.05, 0.95]  # a sure platelet
    probs[85:95, 60:70, :4] = [0.3, 0.1, 0.0, 0.6]  # a platelet by a little: a speck
    probs = probs.astype(np.float32)
    every = find_instances(probs, constructed_metadata().counting, constructed_metadata().layout)
    meta = constructed_metadata(platelet_min_score=0.9)
    sure = find_instances(probs, meta.counting, meta.layout)
    cells = describe_cells(sure, meta.layout)
    before = describe_cells(every, meta.layout)
    assert sorted(c.label for c in before) == ["platelet", "platelet", "rbc", "wbc"]
    assert sorted(c.label for c in cells) == ["platelet", "rbc", "wbc"]
    platelet = next(c for c in cells if c.label == "platelet")
    assert platelet.bbox == (10, 85, 20, 95) and platelet.score == 0.95
    # the speck's pixels are background, the ids run 1..n, the other cells are untouched
    assert (sure.labels[85:95, 60:70] == 0).all()
    assert (
        sorted(sure.classes) == list(range(1, len(cells) + 1)) == sorted(np.unique(sure.labels))[1:]
    )
    kept = {c.label: c.bbox for c in cells if c.label != "platelet"}
    assert kept == {c.label: c.bbox for c in before if c.label != "platelet"}


def test_a_platelet_score_of_one_or_more_is_refused():
    with pytest.raises(ValueError):
        Counting(platelet_min_score=1.0)


def test_class_map_keeps_what_counting_drops():
    meta = metadata()
    probs = synthetic_probs([(50, 30)])
    probs[5:8, 5:8, :3] = [0, 0, 1]  # a WBC fragment too small to count
    semantic = class_map(probs, meta.layout)
    counted = class_mask(find_instances(probs, meta.counting, meta.layout))
    assert semantic.shape == counted.shape
    assert (semantic[5:8, 5:8] == meta.class_id("wbc")).all() and (counted[5:8, 5:8] == 0).all()
    assert (semantic[counted > 0] == counted[counted > 0]).all()


def test_a_class_weight_widens_counted_cells_into_background_only():
    meta, weighted_meta = metadata(), metadata(class_weights={"rbc": 2.0})
    probs = synthetic_probs([(50, 40)])
    # a soft rim around the RBC: the network's unsure pixels, 0.4 RBC against 0.6 background
    yy, xx = np.mgrid[:100, :160]
    distance = np.hypot(yy - 50, xx - 40)
    rim = (distance > 20) & (distance <= 24)
    probs[rim, :3] = [0.6, 0.4, 0.0]
    probs[5:8, 5:8, :3] = [0.3, 0.3, 0.4]  # WBC by a little: a weight contests background only
    probs[80:95, 130:145, :3] = [0.6, 0.4, 0.0]  # an unsure blob touching no cell
    rbc, wbc = meta.class_id("rbc"), meta.class_id("wbc")
    plain, weighted = class_map(probs, meta.layout), class_map(probs, meta.layout, {"rbc": 2.0})
    assert (class_map(probs, meta.layout, {}) == plain).all()
    assert (weighted[rim] == rbc).all() and (plain[rim] == 0).all()
    assert (weighted[80:95, 130:145] == rbc).all()
    assert (weighted[5:8, 5:8] == wbc).all() and (weighted[plain > 0] == plain[plain > 0]).all()

    found = find_instances(probs, meta.counting, meta.layout)
    widened = find_instances(probs, weighted_meta.counting, meta.layout)
    # counted as without the weight, then the counted cell takes the rim and nothing else
    assert found.counted is None and (widened.counted == found.labels).all()
    assert widened.classes == found.classes and widened.scores == found.scores
    [cell] = [c for c in describe_cells(widened, meta.layout) if c.label == "rbc"]
    [before] = [c for c in describe_cells(found, meta.layout) if c.label == "rbc"]
    assert cell.bbox == (16, 26, 65, 75) and before.bbox == (20, 30, 61, 71)
    assert cell.area == int((distance <= 24).sum()) and cell.id == before.id
    assert (widened.labels[80:95, 130:145] == 0).all()


def test_widening_stops_after_its_rings():
    meta = metadata(class_weights={"rbc": 2.0})
    probs = synthetic_probs([(50, 80)])
    distance = np.hypot(*(np.mgrid[:100, :160] - np.array([50, 80])[:, None, None]))
    probs[(distance > 20) & (distance <= 40), :3] = [0.6, 0.4, 0.0]
    instances = find_instances(probs, meta.counting, meta.layout)
    [cell] = describe_cells(instances, meta.layout)
    # WIDEN_STEPS rings of 8-neighbour dilation: a square reach of that many pixels
    reach = 20 + WIDEN_STEPS
    assert cell.bbox == (80 - reach, 50 - reach, 80 + reach + 1, 50 + reach + 1)


def test_class_weights_name_a_foreground_class_of_the_model_and_widen():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="no foreground class"):
        metadata(class_weights={"platelet": 2.0})  # a model without platelets
    with pytest.raises(ValidationError, match="no foreground class"):
        metadata(class_weights={"background": 2.0})
    with pytest.raises(ValidationError, match="at least 1"):
        metadata(class_weights={"rbc": 0.5})
    assert metadata(class_weights={"rbc": 2.0}).counting.class_weights == {"rbc": 2.0}


def test_distance_transform_counting_without_a_centre_head():
    meta = metadata(centre_source="distance_transform")
    cells = describe_cells(
        find_instances(synthetic_probs([(50, 30), (50, 120)]), meta.counting, meta.layout),
        meta.layout,
    )
    assert len(cells) == 2


def test_resized_instances_keep_mask_and_cells_consistent():
    meta = metadata()
    instances = find_instances(
        synthetic_probs([(50, 40), (50, 120)], wbc_box=(0, 60, 30, 100)),
        meta.counting,
        meta.layout,
    )
    big = resize_instances(instances, 200, 320)
    mask = class_mask(big)
    cells = describe_cells(big, meta.layout)
    assert mask.shape == (200, 320) and len(cells) == 3
    for cell in cells:
        x0, y0, x1, y1 = cell.bbox
        pixels = mask[y0:y1, x0:x1][big.labels[y0:y1, x0:x1] == cell.id]
        assert (pixels == meta.class_id(cell.label)).all() and pixels.size == cell.area


def test_cells_measured_on_the_network_map_equal_those_of_the_resized_map():
    """describe_cells with a size measures what resize_instances would build, to the pixel:
    enlarged, shrunk until small cells vanish (ids renumbered as the resized map's), and to
    sizes that are no multiple of the map's."""
    rng = np.random.default_rng(3)
    blocks = rng.integers(0, 40, (12, 15)).astype(np.int32)
    labels = np.kron(blocks, np.ones((5, 5), np.int32))[:57, :71]
    labels[3, 3] = 41  # a one-pixel cell, the first to vanish when shrunk
    ids = np.unique(labels[labels > 0])
    instances = Instances(
        labels, {int(i): 1 + int(i) % 2 for i in ids}, {int(i): float(i) / 50 for i in ids}
    )
    meta = metadata()
    for height, width in ((57, 71), (200, 333), (131, 97), (20, 31), (9, 13)):
        resized = resize_instances(instances, height, width)
        expected = describe_cells(resized, meta.layout)
        assert describe_cells(instances, meta.layout, (height, width)) == expected
        assert sum(c.area for c in expected) == np.count_nonzero(resized.labels)
    assert len(describe_cells(instances, meta.layout, (9, 13))) < len(ids)
