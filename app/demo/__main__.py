"""``python -m app.demo``: the whole loop offline, through the real Vertex SDK.

Starts the local dedicated-endpoint emulator (``client.emulator``) with the two bundled demo
deployments at 50/50 (``shapes-a`` serves the detector by default, ``shapes-b`` the segmenter),
points the unmodified google-cloud-aiplatform SDK at it, and runs the client through
``Endpoint.invoke``: models, detect, annotate (saves the drawn image), segment, classify, pose,
obb (one line each), a stream of a generated video with a progress bar, and one call pinned to
each deployed model. Everything is
shut down on exit. No cloud account, no internet, no GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from app.demo.shapes import CLASSIFY_SCALE, draw_scene, moving_shape_frames, write_video


def _box(b) -> tuple[int, ...]:
    return tuple(round(v) for v in (b.x1, b.y1, b.x2, b.y2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2026, help="seed of the drawn test image")
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="where files go")
    parser.add_argument("--frames", type=int, default=60, help="frames of the streamed video")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    from google.cloud import aiplatform

    from client import Client
    from client.emulator import Emulator, EmulatorError

    started = time.monotonic()
    print("starting the emulator: two deployed models of the demo, 50/50 ...", flush=True)
    try:
        emulator = Emulator(workdir=args.out / "emulator")
        info = emulator.start()
    except EmulatorError as exc:
        print(f"the emulator did not start: {exc}", file=sys.stderr)
        return 1
    try:
        print(
            f"endpoint {info.endpoint} ready after {time.monotonic() - started:.1f} s\n"
            f"  control plane {info.control_plane_url}, data plane https://"
            f"{info.dedicated_endpoint_dns}\n  deployed models "
            + ", ".join(
                f"{n}={i} ({info.traffic_split[i]}%)" for n, i in info.deployed_models.items()
            )
        )
        os.environ.update(info.env())  # trust the emulator's certificate
        aiplatform.init(**info.init_kwargs())
        endpoint = aiplatform.Endpoint(info.endpoint_id)
        names = {i: n for n, i in info.deployed_models.items()}

        with Client(endpoint, image_format="png") as client:
            listing = client.models()
            print(f"\nmodels (answered by {names[listing.deployed_model_id]}): "
                  + ", ".join(f"{m.name} ({m.task})" for m in listing.models))  # fmt: skip

            rgb, shapes = draw_scene(np.random.default_rng(args.seed), 320, 240)
            image = np.ascontiguousarray(rgb[:, :, ::-1])  # the client takes BGR arrays
            detected = client.detect(image)
            print(f"\ndetect via {names[detected.deployed_model_id]} "
                  f"(model {detected.model}, version {detected.version}):")  # fmt: skip
            print(
                "  drawn: "
                + ", ".join(f"{s.name} {tuple(round(v) for v in s.box)}" for s in shapes)
            )
            print("  found: " + ", ".join(
                f"{d.class_name} {_box(d.box)} {d.confidence:.2f}"
                for d in detected.results[0].detections))  # fmt: skip

            drawn = client.annotate(image, format="png")
            path = args.out / "annotated.png"
            drawn.save(path)
            print(f"\nannotate via {names[str(drawn.deployed_model_id)]}: "
                  f"{drawn.detection_count} detections drawn, saved to {path}")  # fmt: skip

            seg = client.segment(image)
            masks = [d.mask for d in seg.results[0].detections if d.mask is not None]
            print(f"\nsegment via {names[seg.deployed_model_id]} (model {seg.model}): "
                  f"{len(masks)} masks, polygon points "
                  f"{[sum(len(p) for p in mask.polygons) for mask in masks]}")  # fmt: skip

            one, (shape,) = draw_scene(
                np.random.default_rng(args.seed), 96, 96, max_shapes=1, scale=CLASSIFY_SCALE
            )
            top = client.classify(np.ascontiguousarray(one[:, :, ::-1]), top_k=2)
            print(f"\nclassify via {names[top.deployed_model_id]} (model {top.model}): drawn "
                  f"{shape.name}, found " + ", ".join(
                      f"{c.class_name} {c.confidence:.2f}" for c in top.results[0].classes))  # fmt: skip

            pose = client.pose(image)
            print(f"\npose via {names[pose.deployed_model_id]} (model {pose.model}): "
                  + "; ".join(
                      f"{d.class_name} corners "
                      + " ".join(f"({k.x:.0f},{k.y:.0f})" for k in d.keypoints or [])
                      for d in pose.results[0].detections) or "no square")  # fmt: skip

            obb = client.obb(image)
            print(f"\nobb via {names[obb.deployed_model_id]} (model {obb.model}): "
                  + ", ".join(
                      f"{d.class_name} at {np.degrees(d.rotated_box.angle):.0f} deg"
                      for d in obb.results[0].detections if d.rotated_box))  # fmt: skip

            frames, _ = moving_shape_frames(args.frames, 320, 240)
            video = args.out / "moving-square.mp4"
            write_video(video, frames, fps=15)
            print(f"\nstream {video} ({args.frames} frames) with tracking:")
            from tqdm import tqdm

            with client.stream(video, track="bytetrack") as stream:
                with tqdm(total=stream.start.frames, unit="frame", file=sys.stdout) as bar:
                    for _ in stream.frames():
                        bar.update()
                end = stream.end
            assert end is not None
            print(f"  via {names[stream.deployed_model_id]}: {end.frames} frames at "
                  f"{end.fps:.1f} fps, classes {end.class_counts}, {end.tracks} track(s)")  # fmt: skip

            print("\npinned calls (deployed_model_id=...):")
            for name, dm_id in info.deployed_models.items():
                pinned = client.detect(image, deployed_model_id=dm_id)
                found = len(pinned.results[0].detections)
                print(f"  asked {name} ({dm_id}) -> answered by {names[pinned.deployed_model_id]}"
                      f" with model {pinned.model}: {found} detections")  # fmt: skip
    finally:
        emulator.stop()
    print(f"\nemulator and its servers stopped; done in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
