"""One call from an RGB image to cells: the path both the service and evaluation take."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Literal

import numpy as np

from app.inference.magnification import MIN_CONTRAST, estimate_rbc_diameter, green_contrast
from app.inference.metadata import ChannelLayout, Counting, ModelMetadata
from app.inference.postprocess import (
    Cell,
    Instances,
    box_size,
    cell_boxes,
    class_map,
    class_mask,
    count_cells,
    describe_cells,
    find_instances,
    rbc_centre_peak,
    resize_instances,
    resize_nearest,
    touches_border,
)
from app.inference.preprocess import normalize_image, rescale_image
from app.inference.runner import OnnxSegmenter


@dataclass
class Segmentation:
    """The result for one image. Cells are measured at the image's own size; the instance map
    and class mask at that size are built only when something asks for them (pictures,
    exports), as a request for counts alone does not need them."""

    network_instances: Instances  # at the network's scale
    size: tuple[int, int]  # the image's height and width
    cells: list[Cell]
    counts: dict[str, int]
    timings_ms: dict[str, float] = field(default_factory=dict)
    # the network's per-pixel class before counting drops fragments (only when asked for)
    semantic: np.ndarray | None = None
    # the RBCs' mean centre peak (postprocess.rbc_centre_peak); None without centres or RBCs
    rbc_peak: float | None = None
    # the RBC diameter the counted cells measure (measured_rbc_diameter), before class weights
    # widen them: what the scale is checked against
    measured_rbc_px: float | None = None

    @cached_property
    def instances(self) -> Instances:
        """The instance map at the image's size, ids as in `cells`."""
        return resize_instances(self.network_instances, *self.size)

    @cached_property
    def mask(self) -> np.ndarray:
        """The class of each counted cell's pixels, at the image's size."""
        return class_mask(self.instances)

    @property
    def pixels(self) -> int:
        """The image's pixel count (at least 1, to divide by)."""
        return max(self.size[0] * self.size[1], 1)

    @property
    def cell_cover(self) -> float:
        """The share of the image's pixels that belong to a counted cell."""
        return sum(cell.area for cell in self.cells) / self.pixels


def scale_for(
    metadata_diameter: float, rbc_diameter_px: float | None, scale: float | None
) -> float:
    """Resampling factor that brings an image's RBCs to `metadata_diameter` (the model's
    working scale)."""
    if rbc_diameter_px is not None:
        return metadata_diameter / rbc_diameter_px
    return 1.0 if scale is None else scale


# the RBCs found at an estimated scale are re-measured; past REFINE_TOLERANCE relative error the
# image is segmented again at the scale they imply (the network reads sizes better than the
# signature: 0.08 against 0.15 moved every validation set's count error down, for 141 second
# passes in 339 images instead of 63); past CONFIRM_TOLERANCE after that, the scale is flagged
# as low-confidence
REFINE_TOLERANCE = 0.08
CONFIRM_TOLERANCE = 0.15
MIN_MEASURED_RBCS = 5
# how much higher an octave's mean RBC centre peak must be to replace the estimated scale's
# (Counting.octave_check_peak): on 2.2.2's validation images the right octave led by 0.12 to
# 0.22, and no pass at the right scale was beaten by more than 0.01
OCTAVE_MARGIN = 0.08


@dataclass(frozen=True)
class ScaleChoice:
    """The resampling applied to an image, the RBC diameter it implies in the image's pixels,
    and where it came from: the client ("given"), the estimate, or the model's own scale when
    estimation is switched off ("default")."""

    scale: float
    rbc_diameter_px: float
    source: Literal["given", "estimated", "default"]
    refined: bool = False  # not the first estimate: re-measured, or an octave away
    # the RBC diameter the cells of the final pass measure (None: fewer than 5 measured)
    measured_px: float | None = None
    passes: int = 1  # network passes made to settle the scale
    # the image's green_contrast when it was too low to estimate from (None: not measured so)
    contrast: float | None = None

    @property
    def checked(self) -> bool:
        """An estimate the cells found agree with (within CONFIRM_TOLERANCE)."""
        return agrees(self.measured_px, self.rbc_diameter_px, CONFIRM_TOLERANCE)


def agrees(measured: float | None, expected: float, tolerance: float) -> bool:
    """A measured RBC diameter within `tolerance` (relative) of the expected one."""
    return measured is not None and abs(measured / expected - 1) <= tolerance


def given_scale(
    metadata: ModelMetadata, rbc_diameter_px: float | None, scale: float | None
) -> ScaleChoice | None:
    """The client's scale or RBC diameter as a ScaleChoice; None when it gave neither."""
    if rbc_diameter_px is None and scale is None:
        return None
    working = metadata.working_rbc_diameter_px
    factor = scale_for(working, rbc_diameter_px, scale)
    return ScaleChoice(factor, working / factor, "given")


def estimated_scale(image: np.ndarray, metadata: ModelMetadata) -> ScaleChoice:
    """Estimate the image's RBC diameter (magnification.py) and the scale that follows; an
    image with too little contrast to measure (a blank frame) keeps the model's own scale,
    where an estimate read from its noise could ask for many times the pixels."""
    contrast = green_contrast(image)
    if contrast < MIN_CONTRAST:
        return ScaleChoice(1.0, metadata.working_rbc_diameter_px, "default", contrast=contrast)
    diameter = estimate_rbc_diameter(image, metadata)
    return ScaleChoice(metadata.working_rbc_diameter_px / diameter, diameter, "estimated")


def predict_probs(
    image: np.ndarray,
    segmenter: OnnxSegmenter,
    scale: float = 1.0,
    check: Callable[[], None] | None = None,
    run: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """The network's probabilities for an RGB uint8 image, at the model's scale (the image
    resampled by `scale`). `run` runs one batch of tiles (default: the segmenter's session)."""
    return segmenter.predict(network_input(image, segmenter, scale), check, run)


def network_input(image: np.ndarray, segmenter: OnnxSegmenter, scale: float) -> np.ndarray:
    """The image resampled to the model's scale and normalised as the model was trained."""
    return normalize_image(rescale_image(image, scale), segmenter.metadata.input.normalization)


def cells_from_probs(
    probs: np.ndarray, counting: Counting, layout: ChannelLayout, height: int, width: int
) -> tuple[Instances, list[Cell]]:
    """Cell instances at the network's scale, found with the thresholds in `counting`, and
    their measurements at the image's size."""
    instances = find_instances(probs, counting, layout)
    return instances, describe_cells(instances, layout, (height, width))


def segment_image(
    image: np.ndarray,
    segmenter: OnnxSegmenter,
    scale: float = 1.0,
    with_class_map: bool = False,
    check: Callable[[], None] | None = None,
    run: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Segmentation:
    """Segment an RGB uint8 image; `scale` resamples it to the model's training scale first.

    `with_class_map` also returns the network's own class map (for scoring pixels), which the
    service does not need. `check` is called between steps and raises to stop the work; `run`
    runs the network on one batch of tiles (the service's network stage).
    """
    check = check or (lambda: None)
    metadata = segmenter.metadata
    height, width = image.shape[:2]
    timings: dict[str, float] = {}

    start = time.perf_counter()
    normalized = network_input(image, segmenter, scale)
    timings["preprocess"] = (time.perf_counter() - start) * 1000

    start = time.perf_counter()
    probs = segmenter.predict(normalized, check, run)
    timings["inference"] = (time.perf_counter() - start) * 1000
    del normalized  # not needed past the network: post-processing's peak is then lower

    check()
    start = time.perf_counter()
    layout = metadata.layout
    instances, cells = cells_from_probs(probs, metadata.counting, layout, height, width)
    semantic = None
    if with_class_map:
        weights = metadata.counting.class_weights
        semantic = resize_nearest(class_map(probs, layout, weights), height, width)
    rbc_peak = rbc_centre_peak(probs, instances, layout)
    measured = counted_rbc_diameter(instances, cells, layout, height, width)
    timings["postprocess"] = (time.perf_counter() - start) * 1000
    return Segmentation(
        network_instances=instances,
        size=(height, width),
        cells=cells,
        counts=count_cells(cells, layout),
        timings_ms=timings,
        semantic=semantic,
        rbc_peak=rbc_peak,
        measured_rbc_px=measured,
    )


def counted_rbc_diameter(
    instances: Instances, cells: list[Cell], layout: ChannelLayout, height: int, width: int
) -> float | None:
    """measured_rbc_diameter of the RBCs as counted: before class weights widened them (the
    scale check was tuned on those), else of `cells` themselves."""
    if instances.counted is None:
        return measured_rbc_diameter([c.bbox for c in cells if c.label == "rbc"], height, width)
    rbc = layout.class_names.index("rbc")
    boxes = cell_boxes(instances.counted, (height, width))
    return measured_rbc_diameter(
        [box for i, box in boxes.items() if instances.classes[i] == rbc], height, width
    )


def measured_rbc_diameter(
    rbc_boxes: list[tuple[int, int, int, int]], height: int, width: int
) -> float | None:
    """Median size (box_size, as annotated boxes are measured) of the RBC boxes not cut by the
    image border; None with fewer than MIN_MEASURED_RBCS of them."""
    sizes = [box_size(box) for box in rbc_boxes if not touches_border(box, height, width)]
    return float(np.median(sizes)) if len(sizes) >= MIN_MEASURED_RBCS else None


def segment_at_estimated_scale(
    image: np.ndarray,
    segmenter: OnnxSegmenter,
    choice: ScaleChoice,
    accept: Callable[[float], bool] = lambda scale: True,
    check: Callable[[], None] | None = None,
    run: Callable[[np.ndarray], np.ndarray] | None = None,
    tolerance: float = REFINE_TOLERANCE,
) -> tuple[ScaleChoice, Segmentation]:
    """Segment at the estimated scale; if the RBCs found there measure more than `tolerance`
    off the estimate, segment again at the scale they imply (when `accept`s it:
    the caller's work bounds). If the network is unsure of its RBCs' centres there, the
    neighbouring octaves are tried too (check_octaves). Returns the scale used and its
    segmentation; earlier passes show in its timings as "first_pass" (in ms, all together)."""

    def segment_at(start: ScaleChoice) -> tuple[ScaleChoice, Segmentation]:
        return refined_segmentation(image, segmenter, start, accept, check, run, tolerance)

    choice, segmentation = segment_at(choice)
    return check_octaves(choice, segmentation, segmenter.metadata.counting, accept, segment_at)


def check_octaves(
    choice: ScaleChoice,
    segmentation: Segmentation,
    counting: Counting,
    accept: Callable[[float], bool],
    segment_at: Callable[[ScaleChoice], tuple[ScaleChoice, Segmentation]],
) -> tuple[ScaleChoice, Segmentation]:
    """The estimated scale's segmentation, or that of half (or double) the scale when the
    network finds its RBCs' centres clearly surer there (Counting.octave_check_peak).
    `segment_at` segments (and refines) from a starting ScaleChoice."""
    peak = segmentation.rbc_peak
    if peak is None or peak >= counting.octave_check_peak:
        return choice, segmentation
    factors = (0.5, 2.0) if peak < counting.octave_check_low_peak else (0.5,)
    best = (choice, segmentation)
    spent, passes = sum(segmentation.timings_ms.values()), choice.passes
    for factor in factors:
        scale = choice.scale * factor
        if not accept(scale):
            continue
        octave, candidate = segment_at(
            ScaleChoice(scale, choice.rbc_diameter_px / factor, "estimated", refined=True)
        )
        spent += sum(candidate.timings_ms.values())
        passes += octave.passes
        if candidate.rbc_peak is not None and candidate.rbc_peak >= peak + OCTAVE_MARGIN:
            best, peak = (octave, candidate), candidate.rbc_peak
    if passes == choice.passes:
        return best
    stages = {k: v for k, v in best[1].timings_ms.items() if k != "first_pass"}
    best[1].timings_ms = {"first_pass": spent - sum(stages.values()), **stages}
    return replace(best[0], passes=passes), best[1]


def refined_segmentation(
    image: np.ndarray,
    segmenter: OnnxSegmenter,
    choice: ScaleChoice,
    accept: Callable[[float], bool],
    check: Callable[[], None] | None,
    run: Callable[[np.ndarray], np.ndarray] | None,
    tolerance: float,
) -> tuple[ScaleChoice, Segmentation]:
    """Segment at `choice`, and once more at the scale its RBCs measure if they measure more
    than `tolerance` off it (and `accept` takes that scale)."""
    metadata = segmenter.metadata
    first = segment_image(image, segmenter, choice.scale, check=check, run=run)
    measured = first.measured_rbc_px
    choice = replace(choice, measured_px=measured)
    if measured is None or agrees(measured, choice.rbc_diameter_px, tolerance):
        return choice, first
    scale = metadata.working_rbc_diameter_px / measured
    if not accept(scale):
        return choice, first
    second = segment_image(image, segmenter, scale, check=check, run=run)
    second.timings_ms = {"first_pass": sum(first.timings_ms.values()), **second.timings_ms}
    refined = ScaleChoice(
        scale, measured, "estimated", True, second.measured_rbc_px, choice.passes + 1
    )
    return refined, second
