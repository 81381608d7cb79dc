"""Scale of the face decoder's data path (issue 26): peak RSS must stay flat in the face count.

    python -m benchmarks.face_stream                          # 2,000, 8,000, 32,000 faces
    python -m benchmarks.face_stream --faces 2000 32000 --image-size 224

Per N, tables written in the real schemas (`storage.schemas`: clips, faces, face_features) by
the parent: N clips (status ok, split train), `FRAMES` faces rows per clip (224² JPEG crops drawn
from a pool of `POOL` distinct noisy synthetic faces, ~12 KB each, with 68 landmarks), one
128-D feature per clip, in shards of `--shard-size` clips (the pipeline's default 256). Then,
in a child process of its own (peak RSS from getrusage: that step's own), what the trainer does
with them: `FaceStream` (the index), its mean landmarks, and one whole epoch of training batches
(batch 16, crops decoded at `--image-size`) through `s2f.train.prefetch.prefetched` (in
process), with the shard cache's largest size and its shard reads. The in-memory loader this
replaced decoded every crop to float32 at 224² first (602 KB a face, measured +979 KB a clip in
issue 26): its column is that floor, N × 602 KB.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import child

FRAMES = 3   # faces rows per clip, as preprocessing's default K = 3 sampled frames
POOL = 256   # distinct crops: a zstd page (~1 MB) holds few repeats, so sizes stay realistic
DIM = 128    # the dlib descriptor's size (the small preset's features)
OLD_BYTES_PER_FACE = 3 * 224 * 224 * 4  # the replaced loader's float32 decode of one crop


def _crop_pool(seed: int = 0) -> tuple[list[bytes], np.ndarray]:
    """`POOL` JPEG crops (synthetic faces + noise) and their 68 landmarks in crop pixels."""
    from s2f.faces.align import encode_jpeg
    from s2f.train.synthetic import face

    rng = np.random.default_rng(seed)
    jpegs, marks = [], []
    for _ in range(POOL):
        img, lm = face(rng.uniform(-1, 1, 3).astype(np.float32))
        noisy = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        jpegs.append(encode_jpeg(noisy))
        marks.append(lm.reshape(-1))
    return jpegs, np.stack(marks)


def write_tables(root: Path, faces: int, shard_size: int) -> dict[str, Any]:
    """The three tables for `faces` clips under `root` (a data directory), shard by shard."""
    from storage.io import rows_to_table, write_table_atomic
    from storage.layout import DataLayout, clip_key
    from storage.schemas import CLIPS, FACES, face_features_schema

    layout = DataLayout(root).ensure()
    jpegs, marks = _crop_pool()
    rng = np.random.default_rng(1)
    for s, first in enumerate(range(0, faces, shard_size)):
        clips, rows, feats = [], [], []
        for i in range(first, min(faces, first + shard_size)):
            yid = f"f{i // 5:010d}"  # 5 clips a video, as AVSpeech
            key = clip_key(yid, 1.0 + 3 * (i % 5), 3.5 + 3 * (i % 5))
            clips.append({"clip_key": key, "manifest": "scale", "split": "train",
                          "line_no": i + 1, "youtube_id": yid, "status": "ok",
                          "audio_path": f"audio/{yid}/{key}.flac"})
            for f in range(FRAMES):
                k = int(rng.integers(POOL))
                rows.append({"clip_key": key, "frame_time_s": 1.5 + f, "landmarks":
                             marks[k].tolist(), "det_score": 1.0, "crop_jpeg": jpegs[k],
                             "bbox": [40.0, 40.0, 184.0, 184.0]})
            feats.append({"clip_key": key, "encoder": "dlib-resnet",
                          "feature": rng.standard_normal(DIM).astype(np.float32).tolist(),
                          "l2_norm": 1.0})
        write_table_atomic(rows_to_table(clips, CLIPS), layout.shard_path("clips", "scale", s))
        write_table_atomic(rows_to_table(rows, FACES), layout.shard_path("faces", "scale", s))
        write_table_atomic(rows_to_table(feats, face_features_schema(DIM)),
                           layout.shard_path("face_features", "scale", s))
    parquet = sum(p.stat().st_size for p in (root / "tables").rglob("*.parquet"))
    return {"parquet_mb": parquet / 2**20, "jpeg_kb": float(np.mean([len(j) for j in jpegs]))
            / 1024}


def child_epoch(root: Path, image_size: int, batch: int, max_batches: int | None = None,
                dev_fraction: float = 0.0) -> dict[str, Any]:
    """The index, the mean shape, then one epoch of batches (or its first `max_batches`)."""
    from s2f.train.face_data import FaceStream
    from s2f.train.prefetch import prefetched
    from storage.layout import DataLayout

    t0 = time.perf_counter()
    stream = FaceStream(DataLayout(root), "dlib-resnet", "train", dev_fraction, image_size, batch)
    stream.mean_landmarks()
    index_s = time.perf_counter() - t0
    t0, faces, cache_rows = time.perf_counter(), 0, 0
    for n, (_, _, b) in enumerate(prefetched(stream, forever=False), start=1):
        faces += len(b)
        cache_rows = max(cache_rows, stream.cache.rows())
        if max_batches is not None and n >= max_batches:
            break
    return {"faces": stream.faces, "index_s": index_s, "epoch_s": time.perf_counter() - t0,
            "trained": faces, "cache_rows": cache_rows, "reads": stream.cache.reads,
            "shards": len(stream.faces_per_shard())}


def run_child(args: list[str]) -> dict[str, Any]:
    result = child.run_child("benchmarks.face_stream", args)
    if "error" in result:
        raise RuntimeError(f"face_stream child failed: {result['error']}")
    return result


def print_table(rows: list[tuple[int, dict[str, Any], dict[str, Any]]], image_size: int,
                shard_size: int) -> None:
    print(f"\nface decoder data path: FaceStream index + mean shape + one epoch of batches of 16 "
          f"at {image_size}², shards of {shard_size} clips × {FRAMES} frames; peak RSS of the "
          f"child process")
    print(f"{'faces':>7} {'parquet MB':>10} {'index s':>8} {'epoch s':>8} {'us/face':>8} "
          f"{'cache rows':>10} {'reads/shards':>12} {'peak MB':>8} {'in-memory floor MB':>18}")
    for n, tables, r in rows:
        print(f"{r['faces']:>7,} {tables['parquet_mb']:10.0f} {r['index_s']:8.2f} "
              f"{r['epoch_s']:8.1f} {1e6 * r['epoch_s'] / max(1, r['trained']):8.0f} "
              f"{r['cache_rows']:>10,} {r['reads']:>5}/{r['shards']:<6} {r['rss_mb']:8.0f} "
              f"{n * OLD_BYTES_PER_FACE / 2**20:18,.0f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, nargs="+", default=[2_000, 8_000, 32_000])
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--work", type=Path, default=Path("/tmp/s2f-face-scale"))
    ap.add_argument("--child", nargs="*", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        result = child_epoch(Path(args.child[0]), int(args.child[1]), int(args.child[2]))
        return child.child_result(result | {"rss_mb": child.peak_rss_mb()})
    rows = []
    for n in args.faces:
        root = args.work / f"faces-{n}"
        shutil.rmtree(root, ignore_errors=True)
        tables = write_tables(root, n, args.shard_size)
        rows.append((n, tables, run_child([str(root), str(args.image_size), str(args.batch)])))
        shutil.rmtree(root, ignore_errors=True)
    print(f"(synthetic crops: {rows[0][1]['jpeg_kb']:.1f} KB JPEG each)")
    print_table(rows, args.image_size, args.shard_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
