"""`python -m training {train,evaluate,export,optimize,calibrate,publish}`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from training.settings import TrainingSettings

if TYPE_CHECKING:
    from app.inference.metadata import ModelMetadata


def _train_parser(sub, settings: TrainingSettings) -> None:
    from training.config import CHOICES, TrainConfig

    parser = sub.add_parser(
        "train", help="train (or resume) a model, export it to ONNX and score it"
    )
    defaults = TrainConfig()
    parser.add_argument(
        "--data",
        nargs="+",
        default=settings.data,
        help="dataset dirs with complete RBC and WBC boxes (Kaggle CSV, VOC or YOLO layout)",
    )
    parser.add_argument(
        "--partial-rbc-data",
        nargs="*",
        default=settings.partial_rbc_data,
        help="dataset dirs whose RBC boxes are incomplete (WBC supervision only)",
    )
    parser.add_argument(
        "--run-dir", default=settings.run_dir, help="where checkpoints and reports go"
    )
    skip = {
        "data",
        "partial_rbc_data",
        "run_dir",
        "counting",
        "strict",
        "batchnorm",
        "tune_counting",
        "source_boost",
        "level_filters",
    }
    for item in fields(TrainConfig):
        if item.name in skip:
            continue
        flag = "--" + item.name.replace("_", "-")
        default = getattr(defaults, item.name)
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
            continue
        kwargs = {"choices": CHOICES[item.name]} if item.name in CHOICES else {}
        parser.add_argument(flag, type=type(default), default=default, **kwargs)
    parser.add_argument(
        "--source-boost",
        nargs="*",
        default=[],
        metavar="SOURCE=FACTOR",
        help="sample these sources FACTOR times more often than sqrt(size) gives "
        "(a source: a dataset dir's name, or name:WxH for a dataset of several sizes)",
    )
    parser.add_argument(
        "--level-filters",
        nargs="*",
        type=int,
        default=[],
        metavar="N",
        help="each level's filters, the bottleneck's last (depth + 1 numbers; default: "
        "doubling from --base-filters)",
    )
    parser.add_argument("--no-batchnorm", dest="batchnorm", action="store_false")
    parser.add_argument(
        "--no-tune-counting",
        dest="tune_counting",
        action="store_false",
        help="keep the default counting thresholds instead of tuning them on "
        "the first dataset's training split",
    )
    parser.add_argument("--strict", action="store_true", help="stop on the first dataset problem")


def _evaluate_parser(sub) -> None:
    parser = sub.add_parser("evaluate", help="score an exported model on a dataset, print JSON")
    parser.add_argument(
        "--model", required=True, help="version dir, model root with CURRENT, or run export dir"
    )
    parser.add_argument("--data", help="dataset dir (Kaggle CSV, VOC or YOLO layout)")
    parser.add_argument(
        "--by-source",
        action="store_true",
        help="instead of --data: the validation images of each source the model was trained "
        "on, each at its own median RBC diameter, as model.json's metrics (needs those datasets)",
    )
    parser.add_argument(
        "--split",
        choices=["all", "train", "val"],
        default="all",
        help="val/train: the published split, else the model's seeded split",
    )
    parser.add_argument(
        "--rbc-diameter",
        default="auto",
        help="RBC diameter of the data in pixels; 'auto' measures it from all the dataset's boxes",
    )


def build_parser() -> argparse.ArgumentParser:
    settings = TrainingSettings()
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub, settings)
    _evaluate_parser(sub)
    export = sub.add_parser("export", help="re-export a run's best checkpoint to ONNX and score it")
    export.add_argument("--run-dir", default=settings.run_dir)
    optimize = sub.add_parser(
        "optimize",
        help="a new version of a published model: same weights, simplified graph, float16 variant",
    )
    optimize.add_argument("--model", required=True, help="version dir or model root with CURRENT")
    optimize.add_argument("--version", required=True, help="the new version's name")
    optimize.add_argument("--out", required=True, help="export dir to write (then `publish` it)")
    optimize.add_argument(
        "--images",
        default=str(Path(__file__).resolve().parents[1] / "tests/data/blood-cell-detection/images"),
        help="real images to check that the graph computes the same",
    )
    optimize.add_argument(
        "--int8",
        action="store_true",
        help="add an int8 variant for the CPU provider if it passes the accuracy gate "
        "(needs the datasets named in model.json)",
    )
    calibrate = sub.add_parser(
        "calibrate",
        help="a new version of a published model: same network, RBC weight calibrated so that "
        "the RBCs found measure their boxes, platelet minimum score tuned, int8 gated again "
        "(needs the datasets named in model.json)",
    )
    calibrate.add_argument("--model", required=True, help="version dir or model root with CURRENT")
    calibrate.add_argument("--version", required=True, help="the new version's name")
    calibrate.add_argument("--out", required=True, help="export dir to write (then `publish` it)")
    publish = sub.add_parser("publish", help="publish an export into the models directory")
    publish.add_argument("--export-dir", default=str(Path(settings.run_dir) / "export"))
    publish.add_argument("--models-dir", default=settings.models_dir)
    publish.add_argument(
        "--no-current",
        dest="current",
        action="store_false",
        help="publish without switching the CURRENT pointer",
    )
    return parser


def run_train(args: argparse.Namespace) -> dict:
    from training.config import TrainConfig
    from training.train import train

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    values["source_boost"] = dict(parse_boost(item) for item in args.source_boost)
    return train(TrainConfig(**values))


def parse_boost(item: str) -> tuple[str, float]:
    """SOURCE=FACTOR from --source-boost."""
    source, _, factor = item.rpartition("=")
    try:
        value = float(factor)
    except ValueError:
        value = -1.0
    if not source or value <= 0:
        raise SystemExit(f"--source-boost wants SOURCE=FACTOR with FACTOR > 0, not {item!r}")
    return source, value


def run_evaluate(args: argparse.Namespace) -> dict:
    from app.inference.metadata import read_metadata, resolve_model_dir
    from app.inference.runner import OnnxSegmenter, RunnerOptions
    from training.data import load_dataset, median_rbc_diameter, split_dataset
    from training.evaluate import evaluate_images

    model_dir = resolve_model_dir(Path(args.model))
    metadata = read_metadata(model_dir / "model.json")
    if args.by_source:
        return evaluate_by_source(model_dir, metadata)
    if not args.data:
        raise SystemExit("evaluate wants --data DIR or --by-source")
    root = Path(args.data)
    dataset = load_dataset(root)
    training = metadata.training
    images = split_dataset(
        root, dataset, args.split, training.get("val_fraction", 0.2), training.get("seed", 7)
    )
    diameter = None
    if args.rbc_diameter == "auto":
        # magnification belongs to the microscope, not the split: measure it as training does
        diameter = median_rbc_diameter(dataset)
    elif args.rbc_diameter not in {"none", ""}:
        diameter = float(args.rbc_diameter)
    segmenter = OnnxSegmenter(
        model_dir, metadata, RunnerOptions(providers=("CPUExecutionProvider",))
    )
    result = evaluate_images(segmenter, images, diameter)
    return {
        "model": f"{metadata.name}/{metadata.version}",
        "data": str(root),
        "split": args.split,
        "rbc_diameter_px": diameter,
        **result,
    }


def evaluate_by_source(model_dir: Path, metadata: ModelMetadata) -> dict:
    """`val:<source>` scores of a model on its own training data's validation split."""
    from app.inference.runner import OnnxSegmenter, RunnerOptions
    from training.evaluate import score_sources
    from training.quantize import training_sets

    segmenter = OnnxSegmenter(
        model_dir, metadata, RunnerOptions(providers=("CPUExecutionProvider",))
    )
    _, val_sets = training_sets(metadata)
    return {"model": f"{metadata.name}/{metadata.version}", **score_sources(segmenter, val_sets)}


def run_export(args: argparse.Namespace) -> dict:
    import keras

    from training.config import TrainConfig
    from training.train import BEST_CHECKPOINT, export_and_score, load_splits

    run_dir = Path(args.run_dir)
    config = TrainConfig(**json.loads((run_dir / "config.json").read_text()))
    model = keras.models.load_model(run_dir / BEST_CHECKPOINT)
    return export_and_score(model, config, load_splits(config), run_dir)


def run_optimize(args: argparse.Namespace) -> dict:
    from app.inference.metadata import resolve_model_dir
    from training.optimize import optimize_published

    images = sorted(Path(args.images).glob("*.png")) + sorted(Path(args.images).glob("*.jpg"))
    source = resolve_model_dir(Path(args.model))
    return optimize_published(source, Path(args.out), args.version, images, args.int8)


def run_calibrate(args: argparse.Namespace) -> dict:
    from app.inference.metadata import resolve_model_dir
    from training.calibrate import calibrate_published

    return calibrate_published(resolve_model_dir(Path(args.model)), Path(args.out), args.version)


def run_publish(args: argparse.Namespace) -> dict:
    from training.publish import publish

    final = publish(Path(args.export_dir), Path(args.models_dir), make_current=args.current)
    return {"published": str(final), "current": args.current}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    handlers = {
        "train": run_train,
        "evaluate": run_evaluate,
        "export": run_export,
        "optimize": run_optimize,
        "calibrate": run_calibrate,
        "publish": run_publish,
    }
    result = handlers[args.command](args)
    print(json.dumps(result, indent=2))
    return 0
