"""The configuration of a training run (kept free of TensorFlow so the CLI starts fast)."""

from __future__ import annotations

from dataclasses import dataclass, field

# how the image enters the UNet (model.build_unet): "full", a conv block at full resolution;
# "patchify", a 2x2 stride-2 convolution straight into the second level
STEMS = ("full", "patchify")
# the train command's fixed choices
CHOICES = {"targets": ("ellipses", "rectangles"), "stem": STEMS}


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as config.json in the run directory).

    The defaults are the recipe of the shipped 2.0.0; 1.1.0's was blood-cell-detection with
    BCCD as partial RBC data, no platelets, 16 filters, 256 crops, the first dataset's scale,
    scale range 1.15 and one pass per epoch.
    """

    data: list[str] = field(
        default_factory=lambda: [
            "../shared/datasets/blood-cell-detection",
            "../shared/datasets/txl-pbc",
        ]
    )
    partial_rbc_data: list[str] = field(default_factory=list)
    run_dir: str = "runs/default"
    name: str = "bloodseg"
    version: str = ""
    targets: str = "ellipses"
    base_filters: int = 12
    depth: int = 4
    # each level's filters, the bottleneck's last (empty: doubling from base_filters)
    level_filters: list[int] = field(default_factory=list)
    stem: str = "full"  # one of STEMS
    batchnorm: bool = True
    tile_size: int = 256
    crop_size: int = 160
    batch_size: int = 8
    epochs: int = 70
    learning_rate: float = 2e-3
    patience: int = 10
    val_fraction: float = 0.2
    seed: int = 7
    wbc_weight: float = 3.0
    platelets: bool = True  # a fourth class; the 1.x models have none
    platelet_weight: float = 3.0
    train_rbc_diameter_px: float = 40.0  # 0: the first dataset's median RBC diameter
    scale_range: float = 1.4  # scale augmentation, log-uniform in [1/range, range]
    # the RBC diameter the exported model resamples images to (0: train_rbc_diameter_px); any
    # size inside the scale augmentation's range was seen in training
    inference_rbc_diameter_px: float = 0.0
    # edge-replicated band around each image, as inference pads it (input.edge_border_px);
    # training draws each side's width in [0, this] so any band the tile leaves room for works
    edge_border_px: int = 0
    samples_per_epoch: int = 384  # 0: one pass over the training images per epoch
    # extra sampling weight of named sources, on top of sqrt(size): {"blood-cell-detection": 3}
    source_boost: dict = field(default_factory=dict)
    val_per_source: int = 16  # validation crops per source during training; 0: all
    size_samples_per_source: int = 300  # images (resampled) the size regressor fits per source
    # a published model (version dir, or a root with CURRENT) whose outputs on each crop the
    # network also learns, weighted by distill_weight (training.distill): a narrower network
    # taught by the shipped one
    teacher: str = ""
    distill_weight: float = 1.0
    # a .keras checkpoint whose weights a new run starts from, with this run's own loss and
    # learning rate (a resumed run keeps the checkpoint's): fine-tuning with another recipe
    init_weights: str = ""
    max_images: int = 0
    strict: bool = False
    tune_counting: bool = True
    counting: dict = field(default_factory=dict)
    counting_note: str = ""  # why `counting` was set by hand, kept in model.json's training
