"""Train the bundled demo models from scratch on a seeded synthetic shapes data set (CPU).

The committed weights in ``app/demo/weights`` and their ``MODEL_CARD.md`` were made by::

    python -m app.demo.train --out app/demo/weights --tasks detect,segment
    python -m app.demo.train --out app/demo/weights --tasks obb,classify --epochs 25 \\
        --train-images 300
    python -m app.demo.train --out app/demo/weights --tasks pose --epochs 60

(a run updates the card's sections of the models it trains and keeps the others). A toy run
(the test suite does this) proves the script still works without touching them::

    python -m app.demo.train --out /tmp/toy --train-images 16 --val-images 8 --epochs 1

After training, each new model is measured on a held-out set drawn with another seed
(:mod:`app.demo.evaluate`), and the figures go into the card.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.offline import configure_ultralytics, disable_sync

BUNDLED = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class DemoModel:
    """One bundled demo model: its file name, task and how it is trained."""

    name: str
    task: str
    cfg: str  # Ultralytics' architecture
    imgsz: int
    init: str | None  # a demo model whose matching layers start this one (same data, faster)
    what: str  # the card's one-line description
    augment: tuple[tuple[str, Any], ...] = ()  # training arguments of this model's own


DEMO_MODELS: dict[str, DemoModel] = {
    m.task: m
    for m in (
        DemoModel("shapes-detect", "detect", "yolo11n.yaml", 160, None,
                  "boxes around circles, squares and triangles"),
        DemoModel("shapes-segment", "segment", "yolo11n-seg.yaml", 160, "detect",
                  "the same objects with instance masks"),
        DemoModel("shapes-classify", "classify", "yolo11n-cls.yaml", 96, "detect",
                  "names the one shape in an image: circle, square or triangle",
                  # crops that keep the shape whole, and nothing erased: the shape is small
                  (("scale", 0.1), ("erasing", 0.0), ("auto_augment", None))),
        DemoModel("shapes-pose", "pose", "yolo11n-pose.yaml", 160, "detect",
                  "finds squares, with their four corners as keypoints"),
        DemoModel("shapes-obb", "obb", "yolo11n-obb.yaml", 160, "detect",
                  "circles, squares and triangles as rotated boxes that fit their rotation"),
    )
}  # fmt: skip


def _train(model_def: DemoModel, data: Path, workdir: Path, epochs: int, args, init=None):
    from ultralytics import YOLO

    cfg = model_def.cfg
    if model_def.task == "pose":
        cfg = str(_pose_architecture(workdir))
    model = YOLO(cfg)
    if init is not None:
        model.load(str(init))  # reuse the detector's layers that fit: same data, faster
    started = time.perf_counter()
    metrics = model.train(
        data=str(data),
        imgsz=model_def.imgsz,
        epochs=epochs,
        batch=args.batch,
        mosaic=0.0,
        cache="ram",
        workers=0,
        device="cpu",
        seed=args.seed,
        deterministic=True,
        project=str(workdir / "runs"),
        name=model_def.task,
        exist_ok=True,
        plots=False,
        amp=False,
        verbose=False,
        **dict(model_def.augment),
    )
    wall = time.perf_counter() - started
    best = workdir / "runs" / model_def.task / "weights" / "best.pt"
    return best, metrics, wall


def _pose_architecture(workdir: Path) -> Path:
    """YOLO11n-pose with the square's four corners as keypoints and its edges as the skeleton
    (a ``skeleton`` key the checkpoint keeps in its architecture, where the server reads it)."""
    from ultralytics.nn.tasks import yaml_model_load
    from ultralytics.utils import YAML

    from app.demo.shapes import CORNER_NAMES, SQUARE_SKELETON

    architecture = yaml_model_load("yolo11n-pose.yaml")
    architecture.pop("yaml_file", None)
    architecture["kpt_shape"] = [len(CORNER_NAMES), 3]
    architecture["skeleton"] = [list(pair) for pair in SQUARE_SKELETON]
    path = workdir / "pose" / "yolo11n-pose.yaml"  # the name tells Ultralytics the scale, n
    path.parent.mkdir(parents=True, exist_ok=True)
    YAML.save(path, architecture)
    return path


def _val_rows(task: str, metrics: Any) -> list[tuple[str, str]]:
    """The card's validation rows (Ultralytics' own validation at the end of training)."""
    if task == "classify":
        return [("val top-1", f"{metrics.top1:.3f}"), ("val top-5", f"{metrics.top5:.3f}")]
    rows = [("val box mAP50", f"{metrics.box.map50:.3f}"),
            ("val box mAP50-95", f"{metrics.box.map:.3f}")]  # fmt: skip
    extra = {"segment": ("mask", "seg"), "pose": ("keypoint", "pose")}.get(task)
    if extra:
        label, attr = extra
        part = getattr(metrics, attr)
        rows += [(f"val {label} mAP50", f"{part.map50:.3f}"),
                 (f"val {label} mAP50-95", f"{part.map:.3f}")]  # fmt: skip
    return rows


CARD_HEAD = """# Demo model card

Tiny YOLO11n models trained from scratch (no pretrained weights) on a synthetic data set drawn by
`app/demo/shapes.py`: coloured circles, squares and triangles on noisy backgrounds. Classes:
`0: circle`, `1: square`, `2: triangle` (the pose model: `0: square`). They exist so that the
server, the client and the tests have real models of every Ultralytics task to run offline; they
know nothing about real photos. One section per model; `python -m app.demo.train` rewrites the
sections of the models it trains.
"""


def _section(
    model_def: DemoModel, args: argparse.Namespace, epochs: int, wall: float, rows: list
) -> str:
    init = (
        f" (layers initialised from {DEMO_MODELS[model_def.init].name})" if model_def.init else ""
    )
    command = "python -m app.demo.train " + shlex.join(
        args.argv if args.argv is not None else sys.argv[1:]
    )
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    extra = "".join(f", `{k}={v!r}`" for k, v in model_def.augment)
    return f"""## {model_def.name}

{model_def.what}.

| | |
|---|---|
| task | {model_def.task} |
| architecture | `{model_def.cfg}`{init} |
| image size | {model_def.imgsz} |
| epochs | {epochs} |
| wall time (CPU, {os.cpu_count()} cores) | {wall:.0f} s |
{table}

Data: {args.train_images} training and {args.val_images} validation images of
{model_def.imgsz}x{model_def.imgsz} pixels (1 to 3 shapes each; one, 0.3 to 0.6 of the side, for
classification),
generated with seed {args.seed}. Training: batch {args.batch}, mosaic off, `device="cpu"`,
deterministic{extra}, Ultralytics defaults otherwise. Command: `{command}`
"""


def update_card(path: Path, sections: dict[str, str]) -> str:
    """Write ``sections`` (model name -> markdown) into the card at ``path``, keeping the
    sections of other models, in :data:`DEMO_MODELS` order."""
    old = path.read_text() if path.exists() else ""
    kept: dict[str, str] = {}
    for chunk in re.split(r"(?m)^(?=## )", old)[1:]:
        name = chunk.split("\n", 1)[0][3:].strip()
        kept[name] = chunk.rstrip() + "\n"
    kept.update({k: v.rstrip() + "\n" for k, v in sections.items()})
    order = [m.name for m in DEMO_MODELS.values()]
    names = sorted(kept, key=lambda n: order.index(n) if n in order else len(order))
    text = CARD_HEAD + "".join("\n" + kept[n] for n in names)
    path.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where the .pt files and card go")
    parser.add_argument(
        "--tasks",
        default="detect,segment,classify,pose,obb",
        help="comma-separated tasks to train (default: all five)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-images", type=int, default=400)
    parser.add_argument("--val-images", type=int, default=80)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--eval-images", type=int, default=200, help="held-out images for the card (0: none)"
    )
    args = parser.parse_args(argv)
    args.argv = argv
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in DEMO_MODELS]
    if unknown:
        parser.error(f"--tasks: unknown {', '.join(unknown)}; choose from {', '.join(DEMO_MODELS)}")

    configure_ultralytics()
    import ultralytics.utils.torch_utils as torch_utils

    torch_utils.NUM_THREADS = os.cpu_count() or 1  # Ultralytics leaves one core idle by default
    disable_sync()
    from app.demo.evaluate import evaluate
    from app.demo.shapes import write_task_dataset

    args.out.mkdir(parents=True, exist_ok=True)
    sections = {}
    with tempfile.TemporaryDirectory(prefix="shapes-train-") as tmp:
        work = Path(tmp)
        trained: dict[str, Path] = {}
        for task in tasks:
            model_def = DEMO_MODELS[task]
            data = write_task_dataset(
                "segment" if task == "detect" else task,  # polygon labels serve detect too
                work / f"data-{task}",
                args.train_images,
                args.val_images,
                args.seed,
                model_def.imgsz,
            )
            init = None
            if model_def.init:  # trained now, else in --out, else the bundled one
                file = f"{DEMO_MODELS[model_def.init].name}.pt"
                init = trained.get(model_def.init) or next(
                    (p for p in (args.out / file, BUNDLED / file) if p.is_file()), None
                )
            best, metrics, wall = _train(model_def, data, work, args.epochs, args, init)
            trained[task] = best
            target = args.out / f"{model_def.name}.pt"
            shutil.copyfile(best, target)
            rows = _val_rows(task, metrics)
            if args.eval_images:
                rows += evaluate(task, target, args.eval_images, seed=args.seed + 1000)
            sections[model_def.name] = _section(model_def, args, args.epochs, wall, rows)
    print(update_card(args.out / "MODEL_CARD.md", sections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
