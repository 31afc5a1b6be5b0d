"""Where one /segment request spends its time: py-spy samples of the request's work, summarised.

    python scripts/profile_request.py                 # 256x256 and 640x480, all pictures
    python scripts/profile_request.py --out docs/benchmark/profile.txt

Runs `segment_upload` (decode, segment, encode: the whole request minus HTTP) in a loop under
`py-spy record`, then prints each function's share of the samples taken inside it, by the
function's own time and with its callees, so the stages to cut show first.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
IMAGES = {
    "256x256": DATASETS / "blood-cell-detection/images/image-10.png",
    "640x480": DATASETS / "bccd/JPEGImages/BloodImage_00000.jpg",
}
ENTRY = "segment_upload"


def loop(image: Path, include: str, seconds: float) -> None:
    """Run the request's work on one image for `seconds` (the profiled process)."""
    from app.core.config import Settings
    from app.core.model_store import load_model, runner_options
    from app.core.segmenting import parse_include, segment_upload
    from app.inference.budget import WorkLimits
    from app.inference.metadata import resolve_model_dir

    settings = Settings(providers=["CPUExecutionProvider"])
    model = load_model(resolve_model_dir(settings.model_dir), runner_options(settings))
    data = image.read_bytes()
    limits = WorkLimits(settings.max_pixels, settings.max_work_pixels)
    parts = parse_include(include)
    segment_upload(data, model, parts, limits)
    ended = time.monotonic() + seconds
    while time.monotonic() < ended:
        segment_upload(data, model, parts, limits)


def summarize(raw: Path, top: int) -> list[str]:
    """Shares of the samples under ENTRY per function, self and inclusive, from py-spy raw."""
    inside = 0
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [frame.split(" (")[0] + " (" + _file(frame) + ")" for frame in stack.split(";")]
        names = [frame.split(" (")[0] for frame in frames]
        if ENTRY not in names:
            continue
        frames = frames[names.index(ENTRY) :]
        inside += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            total[frame] += int(count)
    lines = [f"samples inside {ENTRY}: {inside}", "", "  self%  total%  function"]
    for frame, count in total.most_common(top):
        lines.append(f"{100 * own[frame] / inside:7.1f} {100 * count / inside:7.1f}  {frame}")
    return lines


def _file(frame: str) -> str:
    """'module/file.py' of a py-spy frame 'name (path/file.py:line)'."""
    location = frame.rpartition(" (")[2].rstrip(")").rpartition(":")[0]
    return "/".join(Path(location).parts[-2:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="sampling time per image")
    parser.add_argument("--include", default="mask,instances,overlay,geojson")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, help="also write the summary here")
    parser.add_argument("--loop", choices=sorted(IMAGES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loop:
        loop(IMAGES[args.loop], args.include, args.seconds)
        return 0
    report = [f"include={args.include or '(none)'}, {args.seconds:g} s per image, py-spy 200 Hz"]
    for size in IMAGES:
        with tempfile.TemporaryDirectory() as folder:
            raw = Path(folder) / "profile.txt"
            spy = str(Path(sys.executable).with_name("py-spy"))
            command = [sys.executable, __file__, "--loop", size, "--include", args.include]
            command += ["--seconds", str(args.seconds)]
            record = [spy, "record", "-r", "200", "-f", "raw", "-o", str(raw), "--", *command]
            subprocess.run(record, check=True, capture_output=True)
            report += ["", f"== {size}", *summarize(raw, args.top)]
    print("\n".join(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
