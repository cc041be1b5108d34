"""Renders an episode that `mpdp eval --video` recorded into a video file.

The Rust side records the joint positions (qpos) of every step and the return so far; this
script sets each state in the task's own MuJoCo model, renders it offscreen with MuJoCo's
renderer (OSMesa by default, so it runs on a machine without a GPU or display; set MUJOCO_GL
to egl or glfw to use those), draws the return and step in a corner, and encodes the frames:
H.264 in MP4 through the ffmpeg that the imageio-ffmpeg wheel ships, a WebM (VP9) for .webm,
or a GIF for .gif.

Camera: the task's tracking camera ("track", in every task's XML but InvertedPendulum's);
otherwise MuJoCo's free camera set up as Gymnasium v5 sets it for the task.

Input (JSON): {"xml": path, "task": name, "fps": frames per second, "qpos": [[...], ...],
"returns": [return after each frame], "label": text drawn above the numbers}.
Prints one JSON line: frames, width, height, seconds spent and the output path.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("MUJOCO_GL", "osmesa")

import imageio.v2 as imageio  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

# Gymnasium v5's free-camera settings for the task without a tracking camera.
FREE_CAMERA = {"InvertedPendulum": {"trackbodyid": 0, "distance": 2.04}}


def camera_for(model, task):
    """The tracking camera's name, or a free camera configured like Gymnasium v5's."""
    if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "track") >= 0:
        return "track"
    cam = mujoco.MjvCamera()
    mujoco.mjv_defaultFreeCamera(model, cam)
    cfg = FREE_CAMERA.get(task, {})
    if cfg.get("trackbodyid", -1) >= 0:
        cam.type = mujoco.mjtCamera.mjCAMERA_TRACKING
        cam.trackbodyid = cfg["trackbodyid"]
    if "distance" in cfg:
        cam.distance = cfg["distance"]
    return cam


def overlay(frame, lines):
    """`frame` with `lines` drawn in its top-left corner, white on a dark box."""
    img = Image.fromarray(frame)
    draw = ImageDraw.Draw(img)
    size = max(10, img.height // 24)
    font = ImageFont.load_default(size=size)
    text = "\n".join(lines)
    box = draw.multiline_textbbox((8, 6), text, font=font)
    draw.rectangle((box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 3), fill=(0, 0, 0))
    draw.multiline_text((8, 6), text, font=font, fill=(255, 255, 255))
    return np.asarray(img)


def writer(path, fps):
    ext = os.path.splitext(path)[1].lower()
    if ext == ".gif":
        return imageio.get_writer(path, mode="I", duration=1000.0 / fps, loop=0)
    codec = {".mp4": "libx264", ".webm": "libvpx-vp9"}.get(ext)
    if codec is None:
        sys.exit(f"render.py: {path}: expected .mp4, .webm or .gif")
    # yuv420p: the pixel format every player decodes.
    return imageio.get_writer(
        path,
        fps=fps,
        codec=codec,
        quality=8,
        pixelformat="yuv420p",
        macro_block_size=2,
        ffmpeg_log_level="error",
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("episode", help="the recorded episode (JSON)")
    ap.add_argument("out", help="the video: .mp4, .webm or .gif")
    ap.add_argument("--width", type=int, default=480)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--thumbnail", help="also save the first frame here (PNG)")
    args = ap.parse_args()

    with open(args.episode) as f:
        ep = json.load(f)
    model = mujoco.MjModel.from_xml_path(ep["xml"])
    data = mujoco.MjData(model)
    renderer = mujoco.Renderer(model, args.height, args.width)
    camera = camera_for(model, ep["task"])
    label = ep.get("label", ep["task"])
    fps = float(ep["fps"])
    start = time.time()
    frames = 0
    with writer(args.out, fps) as w:
        for step, (qpos, ret) in enumerate(zip(ep["qpos"], ep["returns"])):
            data.qpos[:] = qpos
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera=camera)
            frame = overlay(renderer.render(), [label, f"step {step}", f"return {ret:.1f}"])
            if frames == 0 and args.thumbnail:
                Image.fromarray(frame).save(args.thumbnail)
            w.append_data(frame)
            frames += 1
    renderer.close()
    print(
        json.dumps(
            {
                "frames": frames,
                "width": args.width,
                "height": args.height,
                "seconds": round(time.time() - start, 3),
                "out": args.out,
            }
        )
    )


if __name__ == "__main__":
    main()
