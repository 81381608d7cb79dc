"""The `preprocess` flow end to end on real media: statuses, tables, resume, CLI errors.

    pytest tests/test_preprocess_flow.py
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from s2f.faces.align import decode_jpeg
from s2f.media.synthetic_clips import write_face_clip
from s2f.preprocess.clips import PreprocessConfig, preprocess_clips
from storage.io import read_extra, rows_to_table, write_table_atomic
from storage.layout import DataLayout, clip_key
from storage.schemas import CLIPS


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    broken = d / "broken.webm"
    broken.write_bytes(b"\x1aE\xdf\xa3" + b"\x00garbage" * 50)
    return {
        "vp9": write_face_clip(d / "facevp9aaaa.webm", "vp9"),
        "h264": write_face_clip(d / "faceh264bbb.mp4", "h264"),
        "two": write_face_clip(d / "twofacescc.webm", "vp9", centres=[(0.25, 0.5), (0.75, 0.5)]),
        "noface": write_face_clip(d / "nofaceddddd.webm", "vp9", centres=[]),
        "broken": broken,
    }


def _row(path: Path, codec: str, line: int, hint: tuple[float, float] = (0.5, 0.45),
         status: str = "ok", start: float = 0.2, end: float = 1.4) -> dict[str, Any]:
    yid = path.stem[:11]
    return {"clip_key": clip_key(yid, start, end) + ("" if line < 10 else f"x{line}"),
            "manifest": "unit", "split": "train", "line_no": line, "youtube_id": yid,
            "start_s": start, "end_s": end, "hint_x": hint[0], "hint_y": hint[1],
            "status": status, "media_path": str(path), "video_path": str(path),
            "video_codec": codec, "width": 640, "height": 360, "fps": 25.0}


def _write_clips(layout: DataLayout, index: int, rows: list[dict[str, Any]]) -> Path:
    return write_table_atomic(rows_to_table(rows, CLIPS), layout.shard_path("clips", "unit", index))


def test_preprocess_clips_statuses_and_the_hint(media: dict[str, Path]) -> None:
    rows = [_row(media["two"], "vp9", 1, hint=(0.2, 0.5)),
            _row(media["two"], "vp9", 12, hint=(0.8, 0.5)),
            _row(media["noface"], "vp9", 3), _row(media["broken"], "vp9", 4),
            _row(media["vp9"], "vp9", 5, status="missing_media")]
    tables = preprocess_clips(rows, PreprocessConfig(), progress=False)
    status = {r["clip_key"]: r for r in tables.preprocess.to_pylist()}
    assert len(status) == 4  # the missing_media row is not ours
    left, right, noface, broken = (rows[i]["clip_key"] for i in range(4))
    assert status[left]["status"] == status[right]["status"] == "ok"
    assert status[noface]["status"] == "no_face" and status[noface]["frames_sampled"] == 3
    assert status[broken]["status"] == "decode_failed" and status[broken]["error"]
    faces = tables.faces.to_pylist()
    left_x = [(f["bbox"][0] + f["bbox"][2]) / 2 for f in faces if f["clip_key"] == left]
    right_x = [(f["bbox"][0] + f["bbox"][2]) / 2 for f in faces if f["clip_key"] == right]
    assert len(left_x) == len(right_x) == 3
    assert max(left_x) < 320 < min(right_x)  # the face nearest the hint in each frame
    crop = decode_jpeg(faces[0]["crop_jpeg"])
    assert crop.shape == (224, 224, 3)
    assert len(faces[0]["landmarks"]) == 136
    features = {r["clip_key"]: np.asarray(r["feature"]) for r in tables.face_features.to_pylist()}
    assert set(features) == {left, right}
    assert np.linalg.norm(features[left] - features[right]) > 0.6  # two different people


def test_no_face_reason_says_what_was_searched_and_the_best_score(media: dict[str, Path]) -> None:
    """A `no_face` row's reason names the frames, the search, the hint (or its absence) and the
    best detector score, as every other failed status's reason says what went wrong."""
    hinted = _row(media["noface"], "vp9", 3, hint=(0.25, 0.6))
    unhinted = {**_row(media["noface"], "vp9", 14), "hint_x": None, "hint_y": None}
    for search, row, where in (("track", hinted, "hint x=0.250 y=0.600"),
                               ("full", unhinted, "no hint")):
        tables = preprocess_clips([row], PreprocessConfig(face_search=search), progress=False)
        (status,) = tables.preprocess.to_pylist()
        assert status["status"] == "no_face"
        reason = status["error"]
        match = re.fullmatch(r"no face in 3 frames at (\d+\.\d\d), (\d+\.\d\d), (\d+\.\d\d) s "
                             rf"\({search} search, {where}\); (.*)", reason)
        assert match, reason
        times = [float(t) for t in match.groups()[:3]]
        assert 0.2 <= times[0] < times[1] < times[2] <= 1.4  # inside the segment, in order
        best = re.fullmatch(r"best hog score (-?\d+\.\d{3}) \(a face needs > 0\)", match[4])
        # a blank frame has no window near a face: either none above the floor, or a miss
        assert best is None and match[4] == "no hog window scored above -1 (a face needs > 0)" \
            or best is not None and -1.0 <= float(best[1]) <= 0.0, match[4]



def test_flow_writes_tables_resumes_and_redoes_changed_shards(
        prefect_server: None, data_dir: Path, media: dict[str, Path]) -> None:
    from flows.preprocess import PreprocessParams, preprocess_flow

    layout = DataLayout(data_dir).ensure()
    shard0 = _write_clips(layout, 0, [_row(media["vp9"], "vp9", 1), _row(media["h264"], "h264", 2),
                                      _row(media["broken"], "vp9", 3)])
    shard1 = _write_clips(layout, 1, [_row(media["noface"], "vp9", 4)])
    params = PreprocessParams(data_dir=data_dir)
    summary = preprocess_flow(params)
    assert summary.counts == {"ok": 2, "decode_failed": 1, "no_face": 1}
    assert (summary.shards_run, summary.shards_skipped) == (2, 0)
    out0 = layout.shard_path("preprocess", "unit", 0)
    decoders = {r["video_decoder"] for r in pq.read_table(out0).to_pylist() if r["status"] == "ok"}
    assert decoders == {"dali-cpu", "pyav"}
    features = pq.read_table(layout.shard_path("face_features", "unit", 0))
    assert features.num_rows == 2 and features.schema.field("feature").type.list_size == 128
    assert all(abs(n - 1.4) < 0.3 for n in features.column("l2_norm").to_pylist())
    assert pq.read_table(layout.shard_path("faces", "unit", 0)).num_rows == 6
    assert read_extra(out0)["params"]["encoder"] == "dlib-resnet"

    mtimes = {p: p.stat().st_mtime_ns for p in layout.root.glob("tables/preprocess/unit/*")}
    again = preprocess_flow(params)
    assert (again.shards_run, again.shards_skipped) == (0, 2)
    assert again.counts == summary.counts
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    # A changed input shard is redone; the other is skipped.
    _write_clips(layout, 1, [_row(media["noface"], "vp9", 4), _row(media["vp9"], "vp9", 15)])
    third = preprocess_flow(params)
    assert (third.shards_run, third.shards_skipped) == (1, 1)
    assert third.counts == {"ok": 3, "decode_failed": 1, "no_face": 1}
    assert shard0.exists() and shard1.exists()

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    # The session's server holds other tests' runs too: the newest artifact is this run's.
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["preprocess-status-counts"])),
            sort=ArtifactSort.CREATED_DESC, limit=1)
    assert artifacts and "no_face" in str(artifacts[0].data)


def test_cli_refuses_vggface_without_weights(capsys: pytest.CaptureFixture[str],
                                             data_dir: Path) -> None:
    from flows.cli import main

    # Refused while the parameters are built: before Prefect or a flow run starts.
    assert main(["preprocess", "--data-dir", str(data_dir), "--encoder", "vggface"]) == 2
    assert "--vggface-weights" in capsys.readouterr().err


def test_cli_prints_counts_and_table_paths(prefect_server: None, data_dir: Path,
                                           media: dict[str, Path],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from flows.params import PreprocessParams
    from flows.preprocess import run_from_cli

    _write_clips(DataLayout(data_dir).ensure(), 0, [_row(media["vp9"], "vp9", 1)])
    assert run_from_cli(PreprocessParams(data_dir=data_dir, frames=3, detector="hog",
                                         encoder="dlib-resnet")) == 0
    out = capsys.readouterr().out
    assert "ok" in out and str(DataLayout(data_dir).table_dir("face_features")) in out


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_gpu_path_decodes_with_nvdec_and_matches_the_cpu_path(media: dict[str, Path]) -> None:
    rows = [_row(media["vp9"], "vp9", 1), _row(media["h264"], "h264", 2)]
    gpu = preprocess_clips(rows, PreprocessConfig(device="cuda"), progress=False)
    cpu = preprocess_clips(rows, PreprocessConfig(device="cpu"), progress=False)
    assert [r["video_decoder"] for r in gpu.preprocess.to_pylist()] == ["dali-gpu", "dali-gpu"]
    assert gpu.status_counts() == cpu.status_counts() == {"ok": 2}
    for g, c in zip(gpu.face_features.to_pylist(), cpu.face_features.to_pylist(), strict=True):
        assert np.linalg.norm(np.asarray(g["feature"]) - np.asarray(c["feature"])) < 0.1
