"""Media: find safely, probe, cut 16 kHz mono FLAC, and one clear status per kind of bad file.

    pytest tests/test_ingest_media.py
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from ingest_helpers import SAMPLE_RATE, make_media_set, tone

from s2f.ingest.media import MediaError, find_media, open_media, read_flac


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_media_set(tmp_path_factory.mktemp("media"))


def _cut(path: Path, start: float, end: float, out: Path) -> int:
    with open_media(path) as source:
        return source.cut_audio(start, end, out)


@pytest.mark.parametrize("case", ["good_mp4", "good_webm"])
def test_cut_audio_is_the_right_16k_mono_segment(media: dict[str, Path], case: str,
                                                 tmp_path: Path) -> None:
    out = tmp_path / "seg.flac"
    n = _cut(media[case], 0.5, 1.5, out)
    samples, rate = read_flac(out)
    assert rate == SAMPLE_RATE and n == len(samples) == SAMPLE_RATE
    got = samples.astype(np.float64) / 32767
    reference = tone().astype(np.float64)
    # Lossy codecs change the waveform a little; the alignment must be within 2 ms.
    lags = range(-32, 33)
    scores = [np.dot(got, reference[8000 + lag: 24000 + lag]) for lag in lags]
    best = list(lags)[int(np.argmax(scores))]
    corr = np.corrcoef(got, reference[8000 + best: 24000 + best])[0, 1]
    assert abs(best) <= 32 and corr > 0.95, (best, corr)
    assert [p.name for p in tmp_path.iterdir()] == ["seg.flac"]  # no temporary file left


def test_probe_reports_streams(media: dict[str, Path]) -> None:
    with open_media(media["good_webm"]) as source:
        probe = source.probe
    assert (probe.video_codec, probe.audio_codec) == ("vp9", "opus")
    assert (probe.width, probe.height, probe.fps) == (64, 48, 25.0)
    assert probe.media_duration_s == pytest.approx(2.0, abs=0.05)


@pytest.mark.parametrize(("case", "start", "end", "status", "reason"), [
    ("empty", 0.0, 1.0, "corrupt_media", "empty (0 bytes)"),
    ("garbage", 0.0, 1.0, "corrupt_media", "not a readable media container"),
    ("truncated_mp4", 0.0, 1.0, "corrupt_media", "not a readable media container"),
    ("truncated_webm", 0.5, 1.9, "corrupt_media", "truncated: audio"),
    ("video_only", 0.0, 1.0, "no_audio", "no audio stream"),
    ("audio_only", 0.0, 1.0, "no_video", "no video stream"),
    ("good_mp4", 1.5, 2.5, "out_of_range", "ends past the end of the media"),
    ("good_mp4", 3.0, 4.0, "out_of_range", "ends past the end of the media"),
    ("garbled_audio", 0.2, 1.5, "decode_failed", "could not be decoded"),
])
def test_bad_media_gets_its_status(media: dict[str, Path], tmp_path: Path, case: str,
                                   start: float, end: float, status: str, reason: str) -> None:
    out = tmp_path / "seg.flac"
    with pytest.raises(MediaError) as info:
        _cut(media[case], start, end, out)
    assert info.value.status == status
    assert reason in info.value.reason
    assert not out.exists() and not list(tmp_path.iterdir())


def test_segment_just_past_the_end_is_tolerated(media: dict[str, Path], tmp_path: Path) -> None:
    assert _cut(media["good_mp4"], 1.0, 2.05, tmp_path / "end.flac") > 0.95 * SAMPLE_RATE


def test_find_media_prefers_known_extensions_and_never_leaves_the_root(
        media: dict[str, Path], tmp_path: Path) -> None:
    root = media["good_mp4"].parent
    assert find_media(root, "goodmp4____") == media["good_mp4"].resolve()
    assert find_media(root, "goodwebm___") == media["good_webm"].resolve()
    for bad_id in ["../goodmp4_", "goodmp4____/..", "/etc/passwd", "goodmp4___"]:
        with pytest.raises(MediaError, match="not a valid YouTube id") as info:
            find_media(root, bad_id)
        assert info.value.status == "missing_media"
    with pytest.raises(MediaError, match="no .*nothinghere"):
        find_media(root, "nothinghere")
    # A link inside the root that points outside it is refused.
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(media["good_mp4"].read_bytes())
    linked_root = tmp_path / "root"
    linked_root.mkdir()
    os.symlink(outside, linked_root / "escapinglnk.mp4")
    with pytest.raises(MediaError, match="outside the media root"):
        find_media(linked_root, "escapinglnk")
