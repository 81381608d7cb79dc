"""One benchmark stage per child process: `python -m benchmarks.stages STAGE WORK_DIR [OPTS]`.

A child measures one thing on the inputs under WORK_DIR (see `benchmarks.data`), repeats it
`--repeat` times, and prints one `RESULT {json}` line: the median seconds, the item counts, and
its own peak RSS and that of its (joined) worker processes from `getrusage`. A process per stage
keeps each stage's peak memory its own. Model loading and pipeline builds are warmed up before
the clock starts (one-time costs per process, amortised over a whole shard or run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

FRAMES = 3
MULTITHREADED = ("embed-vggface", "train")  # dense torch compute: all cores, like a GPU job
STAGES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {}


def stage(name: str) -> Callable[[Callable[[argparse.Namespace], dict[str, Any]]],
                                 Callable[[argparse.Namespace], dict[str, Any]]]:
    def register(fn: Callable[[argparse.Namespace], dict[str, Any]]
                 ) -> Callable[[argparse.Namespace], dict[str, Any]]:
        STAGES[name] = fn
        return fn
    return register


def _proc_cpu(pid: int) -> float:
    """utime + stime of a live process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_now() -> float:
    """CPU seconds of this process and of the live preprocessing pool workers: unlike wall time,
    not inflated by the other load of a shared machine."""
    from s2f.preprocess.pool import _POOLS

    own = resource.getrusage(resource.RUSAGE_SELF)
    total = own.ru_utime + own.ru_stime
    for pool in _POOLS.values():
        for pid in list(getattr(pool, "_processes", {}) or {}):
            try:
                total += _proc_cpu(pid)
            except (OSError, IndexError, ValueError):
                pass
    return total


_LAST_CPU: list[float] = []  # median CPU seconds of the last `timed` call


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall seconds of `repeat` runs and the last run's value (the median CPU seconds,
    which the machine's other load does not inflate, go to `_LAST_CPU` for the result)."""
    times, cpus, value = [], [], None
    for _ in range(repeat):
        cpu, start = cpu_now(), time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
        cpus.append(cpu_now() - cpu)
    _LAST_CPU[:] = [statistics.median(cpus)]
    return statistics.median(times), value


def timed_group(fns: dict[str, Callable[[], Any]], repeat: int
                ) -> dict[str, tuple[float, Any, float]]:
    """Several variants timed in turn, round-robin, `repeat` rounds: side by side, so a change
    of the machine's load hits each alike. Median wall and CPU seconds, last value, per variant."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    cpus: dict[str, list[float]] = {name: [] for name in fns}
    values: dict[str, Any] = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            cpu, start = cpu_now(), time.perf_counter()
            values[name] = fn()
            times[name].append(time.perf_counter() - start)
            cpus[name].append(cpu_now() - cpu)
    return {name: (statistics.median(times[name]), values[name], statistics.median(cpus[name]))
            for name in fns}


# -- inputs ----------------------------------------------------------------------------------------

def _layout(root: Path) -> Any:
    from storage.layout import DataLayout

    return DataLayout(root).ensure()


def ingest(manifest: Path, media_root: Path, data_dir: Path, shard_size: int = 4096) -> list[Path]:
    """Plan + ingest every shard of the manifest (probe, cut, FLAC, clips Parquet), no Prefect."""
    from s2f.ingest.manifest import plan_manifests
    from s2f.ingest.shard import ingest_shard

    layout = _layout(data_dir)
    return [Path(ingest_shard(s, layout, media_root).path)
            for plan in plan_manifests([manifest], shard_size) for s in plan.shards]


def clip_rows(work: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    from storage.io import shard_paths

    rows = [r for p in shard_paths(_layout(work / "data"), "clips")
            for r in pq.read_table(p).to_pylist()]
    return [r for r in rows if r["status"] == "ok"]


def decoded(work: Path, limit: int | None = None) -> list[tuple[dict[str, Any], Any]]:
    from s2f.media.video import DecodedClip, decode_clips
    from s2f.preprocess.clips import _request

    rows = clip_rows(work)[:limit]
    out = decode_clips([_request(r) for r in rows], FRAMES, gpu=False)
    return [(r, d) for r, d in zip(rows, out, strict=True) if isinstance(d, DecodedClip)]


def _hint(row: dict[str, Any]) -> tuple[float, float] | None:
    from s2f.preprocess.clips import _hint as hint

    return hint(row)


# -- stages ----------------------------------------------------------------------------------------

@stage("ingest")
def ingest_stage(args: argparse.Namespace) -> dict[str, Any]:
    """probe + cut + FLAC + clips Parquet; also leaves WORK/data for the other stages."""
    data = json.loads((args.work / "inputs.json").read_text())
    manifest, media = Path(data["manifest"]), Path(data["media_root"])

    def run() -> int:
        shutil.rmtree(args.work / "data", ignore_errors=True)
        ingest(manifest, media, args.work / "data")
        return len(clip_rows(args.work))

    seconds, n = timed(run, args.repeat)
    return {"clips": n, "seconds": seconds}


def _decode(args: argparse.Namespace, force: str) -> dict[str, Any]:
    from s2f.media.video import DaliFrameDecoder, decode_clips
    from s2f.preprocess.clips import _request

    vp9 = [_request(r) for r in clip_rows(args.work) if r["video_codec"] in ("vp8", "vp9")]
    dali = DaliFrameDecoder(gpu=False)
    decode_clips(vp9[:1], FRAMES, gpu=False, dali=dali, force_decoder=force)  # warm-up
    seconds, out = timed(lambda: decode_clips(vp9, FRAMES, gpu=False, dali=dali,
                                              force_decoder=force), args.repeat)
    return {"clips": len(vp9), "seconds": seconds,
            "failed": sum(1 for d in out if not hasattr(d, "frames"))}


@stage("decode")
def decode_both(args: argparse.Namespace) -> dict[str, Any]:
    """DALI CPU and PyAV on the same VP9 clips, alternating in one process."""
    from s2f.media.video import DaliFrameDecoder, decode_clips
    from s2f.preprocess.clips import _request

    vp9 = [_request(r) for r in clip_rows(args.work) if r["video_codec"] in ("vp8", "vp9")]
    dali = DaliFrameDecoder(gpu=False)
    fns = {name: (lambda force=force: decode_clips(vp9, FRAMES, gpu=False, dali=dali,
                                                   force_decoder=force))
           for name, force in (("decode-dali", "dali"), ("decode-pyav", "pyav"))}
    for fn in fns.values():
        fn()  # warm-up: DALI pipeline build, codec libraries
    out = timed_group(fns, args.repeat)
    return {"rows": {name: {"clips": len(vp9), "seconds": seconds, "cpu_s": cpu,
                            "failed": sum(1 for d in value if not hasattr(d, "frames"))}
                     for name, (seconds, value, cpu) in out.items()}}


@stage("detect")
def detect_group(args: argparse.Namespace) -> dict[str, Any]:
    """HOG upsample 0 / 1, the full and the tracked search, alternating in one process on the
    same decoded frames (K per clip; decoding outside the clock)."""
    from s2f.faces.detect import FaceDetector
    from s2f.faces.search import clip_faces, coarse_face

    clips = decoded(args.work, args.detect_clips)
    detector = FaceDetector("hog")

    def middle(d: Any, frames: np.ndarray, hint: Any) -> list[Any]:
        f = np.ascontiguousarray(frames[len(frames) // 2])
        return [coarse_face(d, f, hint) or d.best_face(f, hint)]

    variants = {"detect-hog-up0": _hog_at(0), "detect-hog-up1": _hog_at(1),
                "detect-full": lambda d, frames, hint: [d.best_face(f, hint) for f in frames],
                "detect-track": clip_faces, "floor-detect-one": middle}

    def runner(fn: Callable[[Any, np.ndarray, Any], list[Any]]) -> Callable[[], int]:
        return lambda: sum(f is not None for row, clip in clips
                           for f in fn(detector, clip.frames, _hint(row)))

    runner(clip_faces)()  # warm-up
    out = timed_group({name: runner(fn) for name, fn in variants.items()}, args.repeat)
    return {"rows": {name: {"clips": len(clips), "seconds": seconds, "cpu_s": cpu,
                            "faces": found}
                     for name, (seconds, found, cpu) in out.items()}}


@stage("decode-dali")
def decode_dali(args: argparse.Namespace) -> dict[str, Any]:
    return _decode(args, "dali")


@stage("decode-pyav")
def decode_pyav(args: argparse.Namespace) -> dict[str, Any]:
    return _decode(args, "pyav")


def _detect(args: argparse.Namespace, kind: str, fn: Callable[[Any, np.ndarray, Any], Any],
            frames_per_clip: int = FRAMES, limit: int | None = None) -> dict[str, Any]:
    """Detection on K frames per clip (frames decoded outside the clock); clips/s counts K."""
    from s2f.faces.detect import FaceDetector

    clips = decoded(args.work, limit or args.detect_clips)
    detector = FaceDetector(kind)
    fn(detector, clips[0][1].frames[:1], _hint(clips[0][0]))  # warm-up

    def run() -> int:
        found = 0
        for row, clip in clips:
            found += sum(f is not None for f in fn(detector, clip.frames[:frames_per_clip],
                                                    _hint(row)))
        return found

    seconds, found = timed(run, args.repeat if kind == "hog" else 1)
    scale = FRAMES / frames_per_clip  # CNN is timed on fewer frames: scale to K per clip
    return {"clips": len(clips), "seconds": seconds * scale, "faces": found,
            "cpu_s": _LAST_CPU[0] * scale,
            "frames": len(clips) * frames_per_clip}


def _hog_at(upsample: int) -> Callable[[Any, np.ndarray, Any], list[Any]]:
    def run(detector: Any, frames: np.ndarray, hint: Any) -> list[Any]:
        return [detector.detect_at(np.ascontiguousarray(f), upsample) or None for f in frames]
    return run


@stage("detect-hog-up0")
def detect_up0(args: argparse.Namespace) -> dict[str, Any]:
    return _detect(args, "hog", _hog_at(0))


@stage("detect-hog-up1")
def detect_up1(args: argparse.Namespace) -> dict[str, Any]:
    return _detect(args, "hog", _hog_at(1))


@stage("detect-cnn")
def detect_cnn(args: argparse.Namespace) -> dict[str, Any]:
    return _detect(args, "cnn", _hog_at(0), frames_per_clip=1, limit=2)


@stage("detect-full")
def detect_full(args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline's search before: `best_face` (policy upsample, + landmarks) on every frame."""
    return _detect(args, "hog", lambda d, frames, hint: [d.best_face(f, hint) for f in frames])


@stage("detect-track")
def detect_track(args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline's search now: coarse middle frame + tracking (+ landmarks)."""
    from s2f.faces.search import clip_faces

    return _detect(args, "hog", clip_faces)


@stage("floor-detect-one")
def floor_detect(args: argparse.Namespace) -> dict[str, Any]:
    """The unavoidable detection: one frame per clip (the middle), the pipeline's coarse-first
    search + landmarks."""
    from s2f.faces.search import coarse_face

    def one(detector: Any, frames: np.ndarray, hint: Any) -> list[Any]:
        f = np.ascontiguousarray(frames[len(frames) // 2])
        return [coarse_face(detector, f, hint) or detector.best_face(f, hint)]

    return _detect(args, "hog", one)


@stage("fidelity")
def fidelity(args: argparse.Namespace) -> dict[str, Any]:
    """Tracked vs full search on the same frames: same face/no-face decision per frame, landmark
    distance (px), and for scale the full search's own jitter when the frame moves by 2 px."""
    from s2f.faces.detect import FaceDetector
    from s2f.faces.search import clip_faces

    detector = FaceDetector("hog")
    same = frames = 0
    diffs, jitter = [], []
    for row, clip in decoded(args.work, args.detect_clips):
        full = [detector.best_face(f, _hint(row)) for f in clip.frames]
        fast = clip_faces(detector, clip.frames, _hint(row))
        for f, a, b in zip(clip.frames, full, fast, strict=True):
            frames += 1
            same += (a is None) == (b is None)
            if a is not None and b is not None:
                diffs.append(np.linalg.norm(a.landmarks - b.landmarks, axis=1))
                moved = detector.best_face(np.ascontiguousarray(f[2:, 2:]), None)
                if moved is not None:
                    jitter.append(np.linalg.norm(moved.landmarks + 2 - a.landmarks, axis=1))
    d = np.concatenate(diffs) if diffs else np.zeros(1)
    j = np.concatenate(jitter) if jitter else np.zeros(1)
    return {"frames": frames, "same_decision": same, "mean_px": float(d.mean()),
            "p95_px": float(np.percentile(d, 95)), "max_px": float(d.max()),
            "ref_jitter_mean_px": float(j.mean()), "ref_jitter_p95_px": float(np.percentile(j, 95))}


@stage("align")
def align_stage(args: argparse.Namespace) -> dict[str, Any]:
    """68 landmarks from known boxes + Umeyama + 224 crop (kornia), K frames per clip."""
    import torch

    from s2f.faces.align import similarity_to_template, to_uint8_hwc, warp_faces_from_frames
    from s2f.faces.detect import FaceDetector

    clips = decoded(args.work, args.detect_clips)
    detector = FaceDetector("hog")
    boxes = [[detector.best_face(f, _hint(r)) for f in c.frames] for r, c in clips]

    def run() -> int:
        crops = 0
        for (_, clip), faces in zip(clips, boxes, strict=True):
            keep = [k for k, f in enumerate(faces) if f is not None]
            if not keep:
                continue
            marks = np.stack([detector.face_at(clip.frames[k], faces[k].box, 0.0).landmarks
                              for k in keep])
            m = similarity_to_template(torch.from_numpy(marks))
            crops += len(to_uint8_hwc(warp_faces_from_frames(
                torch.from_numpy(clip.frames[keep]), m)))
        return crops

    seconds, crops = timed(run, args.repeat)
    return {"clips": len(clips), "seconds": seconds, "crops": crops}


def _crops(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (n, 224, 224, 3), dtype=np.uint8)


@stage("embed-dlib")
def embed_dlib(args: argparse.Namespace) -> dict[str, Any]:
    """dlib-resnet on one 224 crop per clip (the representative face), one call per batch."""
    from s2f.faces.features import get_encoder

    encoder = get_encoder("dlib-resnet")
    crops = _crops(args.embed_clips)
    encoder.encode(crops[:1])
    seconds, _ = timed(lambda: encoder.encode(crops), args.repeat)
    return {"clips": len(crops), "seconds": seconds}


@stage("embed-vggface")
def embed_vggface(args: argparse.Namespace) -> dict[str, Any]:
    """VGG-Face fc7 on random weights (shape and speed only), batch 8."""
    import torch

    from s2f.faces.features import VggFace

    model = VggFace().eval()
    crops = torch.from_numpy(_crops(8))
    with torch.inference_mode():
        model.features(model.preprocess(crops[:1]))
        seconds, out = timed(lambda: model.features(model.preprocess(crops)), args.repeat)
    return {"clips": len(crops), "seconds": seconds, "shape": list(out.shape)}


@stage("spectrogram")
def spectrogram_stage(args: argparse.Namespace) -> dict[str, Any]:
    """FLAC load (a pack member, s2f.media.packs) + fix length (6 s) + compressed complex STFT, batches of 8 (s2f.media.audio)."""
    import torch

    from s2f.media.audio import AudioConfig, fix_length, spectrogram
    from s2f.media.packs import load_clip_audio
    from storage.layout import DataLayout

    cfg = AudioConfig()
    layout = DataLayout(args.work / "data")
    paths = [layout.root / r["audio_path"] for r in clip_rows(args.work)]

    def run() -> tuple[int, ...]:
        shape: tuple[int, ...] = ()
        for at in range(0, len(paths), 8):
            waves = torch.from_numpy(np.stack([fix_length(load_clip_audio(p), cfg.num_samples)
                                               for p in paths[at:at + 8]]))
            shape = tuple(spectrogram(waves, cfg).shape)
        return shape

    seconds, shape = timed(run, args.repeat)
    return {"clips": len(paths), "seconds": seconds, "shape": list(shape)}


@stage("train")
def train_stage(args: argparse.Namespace) -> dict[str, Any]:
    """The training engineer's benchmark (benchmarks/train.py `bench`): samples/s of a full step
    (spectrogram + forward + loss + backward + Adam) for `small` (batch 8) and `paper` (batch 1)."""
    import torch

    try:
        from benchmarks.train import bench
    except ImportError as exc:
        return {"skipped": f"benchmarks/train.py not importable: {exc}"}
    cpu = torch.device("cpu")
    return {"train": {"small": bench("small", 8, args.repeat, cpu, False),
                      "paper": bench("paper", 1, 1, cpu, True)}}


# -- whole chains ----------------------------------------------------------------------------------

def _inputs(args: argparse.Namespace) -> tuple[Path, Path]:
    data = json.loads((args.work / "inputs.json").read_text())
    return Path(data["manifest"]), Path(data["media_root"])


@stage("chain-naive")
def chain_naive(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.naive import NaiveClip, naive_chain, naive_models
    from s2f.ingest.manifest import iter_records

    manifest, media = _inputs(args)
    clips = []
    for rec in iter_records(manifest):
        path = next(p for p in media.glob(f"{rec['youtube_id']}.*"))
        clips.append(NaiveClip(rec["clip_key"], str(path), rec["start_s"], rec["end_s"],
                               (rec["hint_x"], rec["hint_y"])))
    models = naive_models()
    out = args.work / "naive"
    cpu = cpu_now()
    seconds, results = timed(lambda: naive_chain(clips, out, FRAMES, models), 1)
    cpu = cpu_now() - cpu
    shutil.rmtree(out, ignore_errors=True)
    return {"clips": len(clips), "seconds": seconds, "cpu_s": cpu,
            "ok": sum(r["status"] == "ok" for r in results)}


def _pipeline(args: argparse.Namespace, search: str, workers: int) -> dict[str, Any]:
    """ingest_shard + preprocess_shard (the flow's two library calls, Parquet included)."""
    from s2f.preprocess.clips import PreprocessConfig, preprocess_clips
    from s2f.preprocess.pool import preprocess_parallel, shutdown_pools
    from s2f.preprocess.shards import preprocess_shard

    manifest, media = _inputs(args)
    config = PreprocessConfig(device="cpu", face_search=search, workers=workers)
    # Warm-up outside the clock: models in this process, or the worker pool (spawn + models).
    rows = clip_rows(args.work)[:2 * max(1, workers)]
    warm = {**PreprocessConfig().__dict__, "device": "cpu", "face_search": search,
            "workers": workers, "chunk_clips": 1}
    start = time.perf_counter()
    if workers > 1:
        preprocess_parallel(rows, PreprocessConfig(**warm), progress=False)
    else:
        preprocess_clips(rows[:1], config, progress=False)
    warm_s = time.perf_counter() - start
    data = args.work / f"chain-{search}-{workers}"

    def run() -> dict[str, int]:
        shutil.rmtree(data, ignore_errors=True)
        counts: dict[str, int] = {}
        for shard in ingest(manifest, media, data):
            for k, v in preprocess_shard(shard, _layout(data), config, progress=False
                                         )["counts"].items():
                counts[k] = counts.get(k, 0) + v
        return counts

    cpu = cpu_now()
    seconds, counts = timed(run, 1)
    cpu = cpu_now() - cpu
    parquet = sum(p.stat().st_size for p in (data / "tables").rglob("*.parquet")) \
        if (data / "tables").exists() else 0
    shutil.rmtree(data, ignore_errors=True)
    shutdown_pools()  # joins the workers, so their peak RSS shows in RUSAGE_CHILDREN
    return {"clips": sum(counts.values()), "seconds": seconds, "cpu_s": cpu,
            "ok": counts.get("ok", 0),
            "counts": counts, "warmup_s": warm_s, "parquet_bytes": parquet}


@stage("chain-full-1")
def chain_full_1(args: argparse.Namespace) -> dict[str, Any]:
    return _pipeline(args, "full", 1)


@stage("chain-track-1")
def chain_track_1(args: argparse.Namespace) -> dict[str, Any]:
    return _pipeline(args, "track", 1)


@stage("chain-track-n")
def chain_track_n(args: argparse.Namespace) -> dict[str, Any]:
    return _pipeline(args, "track", args.workers)


@stage("chain-full-n")
def chain_full_n(args: argparse.Namespace) -> dict[str, Any]:
    return _pipeline(args, "full", args.workers)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=sorted(STAGES))
    ap.add_argument("work", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--detect-clips", type=int, default=6)
    ap.add_argument("--embed-clips", type=int, default=16)
    args = ap.parse_args(argv)
    if args.stage not in MULTITHREADED:
        import torch

        # As in the pipeline's workers: one torch thread per process. Idle extra threads spin
        # and bill CPU on a loaded machine, which would skew the CPU-per-clip figures.
        torch.set_num_threads(1)
    result = STAGES[args.stage](args)
    if "cpu_s" not in result and "rows" not in result and _LAST_CPU:
        result["cpu_s"] = _LAST_CPU[0]
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result |= {"stage": args.stage, "rss_mb": round(own, 1), "worker_rss_mb": round(kids, 1)}
    print("RESULT " + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
