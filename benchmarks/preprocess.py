"""Per-stage throughput of preprocessing (clips/s): decode (DALI vs PyAV on the same VP9 clips),
detect + landmarks, align + crop, embed, and the whole `preprocess_clips`.

    python benchmarks/preprocess.py                      # 16 generated 2 s VP9 clips, 360p
    python benchmarks/preprocess.py --clips 64 --height 720 --width 1280
    python benchmarks/preprocess.py --corpus DIR         # media files (*.webm, *.mp4, *.mkv)
    python benchmarks/preprocess.py --encoder vggface --vggface-weights vgg_face.pt

Runs on whatever is there: with CUDA the DALI decoder is NVDEC and the warp runs on the GPU.
Each stage runs once over all clips after one warm-up clip; times are wall-clock.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _generated(n: int, height: int, width: int, out: Path) -> list[dict[str, Any]]:
    from s2f.media.synthetic_clips import write_face_clip

    rows = []
    for i in range(n):
        path = write_face_clip(out / f"bench{i:04d}.webm", "vp9", seconds=2.0, height=height,
                               width=width, face_px=max(60, height // 3))
        rows.append({"clip_key": f"bench{i:04d}", "status": "ok", "video_path": str(path),
                     "start_s": 0.2, "end_s": 1.8, "fps": 25.0, "video_codec": "vp9",
                     "hint_x": 0.5, "hint_y": 0.45})
    return rows


def _corpus(root: Path, limit: int) -> list[dict[str, Any]]:
    import av

    rows = []
    for path in sorted(p for ext in ("webm", "mp4", "mkv") for p in root.rglob(f"*.{ext}"))[:limit]:
        with av.open(str(path)) as container:
            if not container.streams.video:
                continue
            stream = container.streams.video[0]
            duration = float(container.duration or 0) / 1e6
            rows.append({"clip_key": path.stem, "status": "ok", "video_path": str(path),
                         "start_s": 0.0, "end_s": max(0.5, min(duration, 3.0)),
                         "fps": float(stream.average_rate or 25), "hint_x": None, "hint_y": None,
                         "video_codec": stream.codec_context.name})
    return rows


def _time(label: str, n: int, fn: Callable[[], Any], results: list[tuple[str, float, float]]
          ) -> Any:
    start = time.perf_counter()
    value = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    results.append((label, n / seconds, seconds))
    return value


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--corpus", type=Path, default=None, help="directory of media files")
    parser.add_argument("--detector", choices=["hog", "cnn"], default="hog")
    parser.add_argument("--encoder", default="dlib-resnet")
    parser.add_argument("--vggface-weights", type=Path, default=None)
    return parser.parse_args()


def main() -> None:
    args = _args()
    from s2f.faces.align import similarity_to_template, to_uint8_hwc, warp_faces_from_frames
    from s2f.faces.detect import FaceDetector
    from s2f.faces.features import get_encoder
    from s2f.media.video import DaliFrameDecoder, DecodedClip, decode_clips
    from s2f.preprocess.clips import PreprocessConfig, _request, preprocess_clips

    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rows = (_corpus(args.corpus, args.clips) if args.corpus
                else _generated(args.clips, args.height, args.width, Path(tmp)))
        print(f"{len(rows)} clips ready in {time.perf_counter() - t0:.1f} s; "
              f"device {'cuda' if gpu else 'cpu'}; {torch.get_num_threads()} torch threads")
        requests = [_request(r) for r in rows]
        vp9 = [q for q in requests if (q.video_codec or "") in ("vp8", "vp9")]
        n = len(requests)
        results: list[tuple[str, float, float]] = []
        dali = DaliFrameDecoder(gpu=gpu)
        decode_clips(requests[:1], args.frames, gpu=gpu, dali=dali)  # warm-up: pipeline build
        if vp9:
            _time(f"decode DALI ({dali.name}), VP9", len(vp9),
                  lambda: decode_clips(vp9, args.frames, gpu=gpu, dali=dali,
                                       force_decoder="dali"), results)
            _time("decode PyAV, same VP9 clips", len(vp9),
                  lambda: decode_clips(vp9, args.frames, gpu=gpu, force_decoder="pyav"), results)
        decoded = _time("decode (per-codec choice), all", n,
                        lambda: decode_clips(requests, args.frames, gpu=gpu, dali=dali), results)
        clips = [d for d in decoded if isinstance(d, DecodedClip)]
        detector = FaceDetector(args.detector)

        def detect() -> list[list[Any]]:
            out = []
            for clip in clips:
                frames = clip.frames.cpu().numpy() if isinstance(clip.frames, torch.Tensor) \
                    else clip.frames
                out.append([detector.best_face(f, (0.5, 0.45)) for f in frames])
            return out

        faces = _time(f"detect + 68 landmarks ({args.detector})", len(clips), detect, results)

        def align() -> list[np.ndarray]:
            crops = []
            for clip, found in zip(clips, faces, strict=True):
                keep = [k for k, f in enumerate(found) if f is not None]
                if not keep:
                    continue
                marks = torch.from_numpy(np.stack([found[k].landmarks for k in keep])).to(device)
                frames = clip.frames if isinstance(clip.frames, torch.Tensor) \
                    else torch.from_numpy(clip.frames)
                crops.append(to_uint8_hwc(warp_faces_from_frames(
                    frames[keep].to(device), similarity_to_template(marks))))
            return crops

        crops = _time("align + 224 crop (kornia)", len(clips), align, results)
        encoder = get_encoder(args.encoder, vggface_weights=args.vggface_weights)
        reps = np.stack([c[len(c) // 2] for c in crops]) if crops else np.zeros((0, 224, 224, 3))
        _time(f"embed ({args.encoder}, 1 face/clip)", len(reps), lambda: encoder.encode(reps),
              results)
        config = PreprocessConfig(frames=args.frames, detector=args.detector,
                                  encoder=args.encoder, vggface_weights=str(args.vggface_weights)
                                  if args.vggface_weights else None)
        tables = _time("preprocess_clips end to end", n,
                       lambda: preprocess_clips(rows, config, encoder=encoder, dali=dali,
                                                detector=detector, progress=False), results)
        print(f"statuses: {tables.status_counts()}")
        print(f"{'stage':<40} {'clips/s':>9} {'seconds':>9}")
        for label, rate, seconds in results:
            print(f"{label:<40} {rate:9.2f} {seconds:9.2f}")


if __name__ == "__main__":
    main()
