"""An estimated scale an octave off confirms itself (cells twice the expected size split in
halves of the expected size); the octave check catches it by the network's centre peaks."""

import numpy as np
import pytest

from app.inference.decode import load_image
from app.inference.metadata import DEFAULT_CLASSES, read_metadata, resolve_model_dir
from app.inference.pipeline import ScaleChoice, segment_at_estimated_scale
from app.inference.postprocess import Instances, rbc_centre_peak
from app.inference.runner import OnnxSegmenter, RunnerOptions
from tests.conftest import FIXTURE_BCD, SHIPPED_MODEL
from training.data import load_dataset, median_rbc_diameter

CPU = RunnerOptions(providers=("CPUExecutionProvider",))


def test_the_rbc_centre_peak_is_the_mean_of_each_rbcs_highest_centre_value(tmp_path):
    metadata = read_metadata(resolve_model_dir(SHIPPED_MODEL) / "model.json")
    layout = metadata.layout
    probs = np.zeros((8, 8, len(metadata.output.channels)), np.float32)
    centre = probs[..., layout.centre_channel]
    labels = np.zeros((8, 8), np.int32)
    labels[:4, :4], labels[4:, 4:], labels[:2, 6:] = 1, 2, 3
    centre[1, 1], centre[2, 2] = 0.9, 0.5  # the first RBC's highest value is 0.9
    centre[6, 6] = 0.3
    centre[0, 7] = 1.0  # a WBC's centre does not count
    rbc, wbc = layout.class_names.index("rbc"), layout.class_names.index("wbc")
    instances = Instances(labels, {1: rbc, 2: rbc, 3: wbc}, {1: 1.0, 2: 1.0, 3: 1.0})
    assert rbc_centre_peak(probs, instances, layout) == pytest.approx(0.6)
    no_rbcs = Instances(labels * (labels == 3), {3: wbc}, {3: 1.0})
    assert rbc_centre_peak(probs, no_rbcs, layout) is None
    without_centre = metadata.model_copy(
        update={
            "classes": DEFAULT_CLASSES,
            "output": metadata.output.model_copy(update={"channels": ["background", "rbc", "wbc"]}),
        }
    )
    assert rbc_centre_peak(probs, instances, without_centre.layout) is None


def test_models_before_the_check_never_run_it():
    older = read_metadata(SHIPPED_MODEL / "2.2.1" / "model.json")
    assert older.counting.octave_check_peak == older.counting.octave_check_low_peak == 0


@pytest.fixture(scope="module")
def segmenters():
    model_dir = resolve_model_dir(SHIPPED_MODEL)
    metadata = read_metadata(model_dir / "model.json")
    assert metadata.counting.octave_check_peak > 0, "the shipped model runs the octave check"
    unchecked = metadata.model_copy(
        update={"counting": metadata.counting.model_copy(update={"octave_check_peak": 0.0})}
    )
    return OnnxSegmenter(model_dir, metadata, CPU), OnnxSegmenter(model_dir, unchecked, CPU)


@pytest.mark.parametrize("name", ["image-2.png", "image-7.png"])
@pytest.mark.parametrize("octave", [0.5, 2.0])
def test_an_estimate_an_octave_off_is_corrected(segmenters, name, octave):
    checked, unchecked = segmenters
    (annotated,) = [a for a in load_dataset(FIXTURE_BCD) if a.path.name == name]
    image = load_image(annotated.path)
    truth = median_rbc_diameter([annotated])
    working = checked.metadata.working_rbc_diameter_px
    start = ScaleChoice(working / (truth * octave), truth * octave, "estimated")
    boxed = sum(b.label == "rbc" for b in annotated.boxes)

    wrong, wrong_cells = segment_at_estimated_scale(image, unchecked, start)
    assert abs(wrong.rbc_diameter_px / truth - 1) > 0.35  # the wrong octave confirms itself
    assert abs(wrong_cells.counts["rbc"] - boxed) > 5

    right, cells = segment_at_estimated_scale(image, checked, start)
    assert abs(right.rbc_diameter_px / truth - 1) <= 0.12
    assert right.refined and abs(cells.counts["rbc"] - boxed) <= 3
    assert cells.rbc_peak > wrong_cells.rbc_peak
    # the passes it did not keep are counted and timed
    assert right.passes > wrong.passes >= 1 and cells.timings_ms["first_pass"] > 0
