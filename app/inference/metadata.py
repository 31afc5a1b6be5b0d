"""model.json: the description of a published model, and how to find the current one."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

SCHEMA_VERSION = 1
CURRENT_POINTER = "CURRENT"
MODEL_FILE = "model.onnx"
METADATA_FILE = "model.json"
# what CURRENT may hold: one version directory name, never a path
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


class ClassInfo(BaseModel):
    """One output class: its index in the class channels, name and RGB display colour."""

    id: int
    name: str
    color: tuple[int, int, int]


class Normalization(BaseModel):
    """How RGB uint8 pixels become the float input (see preprocess.normalize_image)."""

    method: Literal["per_image_standardize"] = "per_image_standardize"
    min_std: float = Field(0.04, description="floor on the per-channel std of pixels/255")


class InputSpec(BaseModel):
    """The network input tensor."""

    name: str = "image"
    layout: Literal["NHWC"] = "NHWC"
    dtype: Literal["float32"] = "float32"
    channels: Literal["RGB"] = "RGB"
    tile_size: int = Field(256, description="height and width of one inference window")
    size_multiple: int = Field(16, description="spatial sizes must be a multiple of this")
    edge_border_px: int = Field(
        0,
        ge=0,
        description="pixels of band placed around the image on each side, as far as the "
        "padded size leaves room, repeating the image's rows and columns 2 px in from its "
        "border (0: zero padding below and right, as 1.x-2.1)",
    )
    normalization: Normalization = Normalization()


class OutputSpec(BaseModel):
    """The network output tensor: softmax class channels, then an optional centre heatmap."""

    name: str = "probs"
    channels: list[str]

    @property
    def has_centre(self) -> bool:
        return "centre" in self.channels


@dataclass(frozen=True)
class ChannelLayout:
    """What post-processing needs to know of a network's output: the class names by class id
    (the first channels), the centre heatmap's channel if there is one, and the RBC diameter
    the network is run at (the radius a distance-transform centre map is scaled by)."""

    class_names: tuple[str, ...]
    centre_channel: int | None
    rbc_diameter_px: float


class Counting(BaseModel):
    """How probabilities become cell instances, and the thresholds used (in pixels at the
    scale the network is run at, ModelMetadata.working_rbc_diameter_px).

    `wbc_components_rbc_peaks` (1.x): one WBC per connected WBC region, one RBC per centre peak.
    `cell_peaks` (2.x): WBCs split at centre peaks too, at least `wbc_min_peak_distance_px`
    apart; platelets are connected platelet regions.
    """

    method: Literal["wbc_components_rbc_peaks", "cell_peaks"] = "wbc_components_rbc_peaks"
    centre_source: Literal["heatmap", "distance_transform"] = "heatmap"
    peak_threshold: float = 0.3
    min_peak_distance_px: int = 10
    rbc_min_area_px: int = 120
    wbc_min_area_px: int = 600
    wbc_min_peak_distance_px: int = 24
    platelet_min_area_px: int = 10
    # a platelet whose mean platelet probability is under this is dropped: the network's false
    # platelets (a stain speck, an RBC's pale rim) are less sure than its real ones
    # (tune.tune_platelet_score; 0: every platelet region counts, models before 2.2.6)
    platelet_min_score: float = Field(0.0, ge=0.0, lt=1.0)
    # A scale off by an octave can confirm itself (RBCs twice the expected size are split in
    # halves that measure the expected size), but the network's centre peaks are weaker there.
    # An estimated scale whose RBCs' mean centre peak is under `octave_check_peak` is also tried
    # at half the scale, and under `octave_check_low_peak` at double the scale too; a pass whose
    # peaks are higher by OCTAVE_MARGIN (pipeline.py) wins. 0: never (models before 2.2.2).
    octave_check_peak: float = 0.0
    octave_check_low_peak: float = 0.0
    # Cell extent: cells are found and counted on the plain argmax, then each grows into the
    # background pixels next to it where its class's probability times its weight beats
    # background's (postprocess.widen_cells). Trained with partial labels and a band taught as
    # background, 2.x networks paint RBCs a few percent smaller than their boxes; training
    # calibrates the RBC weight so that the RBCs found measure their boxes
    # (tune.calibrate_rbc_weight). Foreground classes only, each at least 1 (a weight under 1
    # would never beat background). Empty: cells as counted (models before 2.2.4).
    class_weights: dict[str, float] = {}

    @field_validator("class_weights")
    @classmethod
    def _weights_widen(cls, weights: dict[str, float]) -> dict[str, float]:
        if any(not w >= 1 for w in weights.values()):
            raise ValueError(f"class weights must be at least 1: {weights}")
        return weights


class Variant(BaseModel):
    """Another file of the same model, for some providers (float16 for CUDA, say), with its
    checksum and how closely it reproduces model.onnx."""

    file: str = Field(pattern=r"^model\.[a-z0-9]+\.onnx$")
    precision: Literal["float16", "int8"]
    providers: list[str]
    sha256: str
    parity: dict[str, float] = {}


class ModelMetadata(BaseModel):
    """Everything a consumer needs to run a published model the way it was trained."""

    schema_version: int = SCHEMA_VERSION
    name: str
    version: str
    classes: list[ClassInfo]
    input: InputSpec
    output: OutputSpec
    rbc_diameter_px: float = Field(description="training scale: median RBC diameter in pixels")
    inference_rbc_diameter_px: float | None = Field(
        None,
        gt=0,
        description="the RBC diameter in pixels images are resampled to before the network, "
        "when it differs from the training scale (the network saw a range of sizes around it); "
        "counting's pixel thresholds are at this scale",
    )
    counting: Counting
    size_regressor: dict[str, Any] | None = Field(
        None, description="ridge weights of the magnification estimate (magnification.py)"
    )
    training: dict[str, Any] = {}
    datasets: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {}
    onnx_sha256: str = ""
    variants: list[Variant] = []
    created_at: str = ""
    package_version: str = ""

    @model_validator(mode="after")
    def _weights_name_classes(self) -> ModelMetadata:
        foreground = {c.name for c in self.classes if c.id != 0}
        unknown = set(self.counting.class_weights) - foreground
        if unknown:
            raise ValueError(
                f"counting.class_weights names no foreground class of the model: {unknown}"
            )
        return self

    @property
    def working_rbc_diameter_px(self) -> float:
        """The RBC diameter (pixels) the network is run at: inference_rbc_diameter_px if set,
        else the training scale."""
        return self.inference_rbc_diameter_px or self.rbc_diameter_px

    def variant_for(self, provider: str, precision: str | None = None) -> Variant | None:
        """The variant meant for this execution provider (of this precision, if given), if the
        model ships one."""
        return next(
            (
                v
                for v in self.variants
                if provider in v.providers and precision in (None, v.precision)
            ),
            None,
        )

    def trained_diameter_range_px(self) -> tuple[float, float] | None:
        """The RBC diameters (pixels) of the training images as uploaded: each source's
        median, widened by the training's scale augmentation. None if not recorded."""
        diameters = [
            float(d["rbc_diameter_px"])
            for dataset in self.datasets
            for d in dataset.get("sources", [dataset])
            if "rbc_diameter_px" in d
        ]
        if not diameters:
            return None
        spread = float(self.training.get("scale_range", 1.15))
        return min(diameters) / spread, max(diameters) * spread

    def class_id(self, name: str) -> int:
        """Index of the named class in the class channels."""
        return next(c.id for c in self.classes if c.name == name)

    @property
    def layout(self) -> ChannelLayout:
        """The output channels as post-processing reads them."""
        channels = self.output.channels
        return ChannelLayout(
            class_names=tuple(c.name for c in sorted(self.classes, key=lambda c: c.id)),
            centre_channel=channels.index("centre") if "centre" in channels else None,
            rbc_diameter_px=self.working_rbc_diameter_px,
        )


DEFAULT_CLASSES = [
    ClassInfo(id=0, name="background", color=(0, 0, 0)),
    ClassInfo(id=1, name="rbc", color=(230, 57, 70)),
    ClassInfo(id=2, name="wbc", color=(58, 110, 235)),
]
PLATELET_CLASS = ClassInfo(id=3, name="platelet", color=(255, 190, 11))


def read_metadata(path: Path) -> ModelMetadata:
    """Parse and validate a model.json file."""
    return ModelMetadata.model_validate_json(path.read_text())


def resolve_model_dir(path: Path) -> Path:
    """Return the version directory for a model path.

    `path` may be a version directory (holds model.json), or a model's root whose CURRENT
    file names the version in use.
    """
    if (path / METADATA_FILE).is_file():
        return path
    pointer = path / CURRENT_POINTER
    if pointer.is_file():
        version = pointer.read_text().strip()
        if not VERSION_NAME.fullmatch(version) or ".." in version:
            raise FileNotFoundError(
                f"{pointer} must name a version directory beside it, not {version[:80]!r}"
            )
        directory = path / version
        if directory.resolve().parent != path.resolve():
            raise FileNotFoundError(f"{pointer}: version {version} lies outside {path}")
        return directory
    raise FileNotFoundError(f"{path} holds neither {METADATA_FILE} nor a {CURRENT_POINTER} pointer")
