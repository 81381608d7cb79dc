"""The `ingest` Prefect flow on real media: every line gets a status and a reason, a re-run adds
nothing, a lost shard is redone alone, appended lines redo only the tail, downloads go through
yt-dlp against a loopback HTTP server.

    pytest tests/test_ingest_flow.py
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from ingest_helpers import clip_flac, copy_media, make_good, make_media_set

from flows.cli import build_parser, command_params, main
from storage.io import read_extra, shard_paths
from storage.layout import DataLayout
from storage.status import clip_status

# line -> expected status; blank lines have no row. Shards of 4 lines.
MANIFEST = [
    ("goodmp4____,0.5,1.5,0.5,0.5", "ok"),
    ("goodmp4____,0,1,0.2,0.8", "ok"),               # same video, second segment
    ("goodwebm___,0.25,1.75,0.5,0.5", "ok"),
    ("", None),
    ("missingvid_,0,1,0.5,0.5", "missing_media"),
    ("empty______,0,1,0.5,0.5", "corrupt_media"),
    ("garbage____,0,1,0.5,0.5", "corrupt_media"),
    ("truncmp4___,0,1,0.5,0.5", "corrupt_media"),
    ("truncwebm__,0.5,1.9,0.5,0.5", "corrupt_media"),
    ("videoonly__,0,1,0.5,0.5", "no_audio"),
    ("audioonly__,0,1,0.5,0.5", "no_video"),
    ("goodmp4____,1.5,3,0.5,0.5", "out_of_range"),
    ("garbledaud_,0.2,1.5,0.5,0.5", "decode_failed"),
    ("goodmp4____,0.500,1.500,0.5,0.5", "duplicate"),  # same key as line 1
    ("not,a,valid,row", "invalid_row"),
    ("../../../etc,0,1,0.5,0.5", "invalid_row"),
    ("goodmp4____,1,2,0.5,0.5,extra", "invalid_row"),
]


@pytest.fixture(scope="module")
def media_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_media_set(tmp_path_factory.mktemp("media-set"))


def _write_manifest(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _params(manifest: Path, media_root: Path, data_dir: Path, **kw):
    from flows.ingest import IngestParams

    return IngestParams(manifests=[manifest], media_root=media_root, data_dir=data_dir,
                        shard_size=4, **kw)


def _clip_rows(data_dir: Path) -> pl.DataFrame:
    return pl.read_parquet([str(p) for p in shard_paths(DataLayout(data_dir), "clips")])


def test_flow_records_every_line_and_reruns_add_nothing(
        prefect_server: None, media_set: dict[str, Path], tmp_path: Path, data_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from flows.ingest import ingest_flow, run_from_cli

    media_root = tmp_path / "media"
    copy_media(media_set, media_root)
    manifest = _write_manifest(tmp_path / "avspeech_train.csv", [line for line, _ in MANIFEST])
    assert run_from_cli(_params(manifest, media_root, data_dir)) == 0
    printed = capsys.readouterr().out
    assert "clips tables:" in printed and "corrupt_media    4" in printed

    status = clip_status(DataLayout(data_dir))
    expected = [(i + 1, s) for i, (_, s) in enumerate(MANIFEST) if s is not None]
    assert list(zip(status["line_no"], status["status"], strict=True)) == expected
    assert set(status["stage"]) == {"clips"}
    assert set(status["manifest"]) == {"avspeech_train"}
    failed = status.filter(pl.col("status") != "ok")
    assert failed["error"].null_count() == 0 and all(len(e) > 10 for e in failed["error"])
    assert "duplicate of avspeech_train line 1" in failed.filter(
        pl.col("status") == "duplicate")["error"][0]

    clips = _clip_rows(data_dir)
    ok = clips.filter(pl.col("status") == "ok")
    assert ok["clip_key"].n_unique() == ok.height == 3
    assert set(clips["split"]) == {"train"}
    for row in ok.iter_rows(named=True):
        samples, _ = clip_flac(DataLayout(data_dir), row["audio_path"])  # from the shard's pack
        assert row["audio_path"].startswith("audio/packs/avspeech_train/shard-")
        assert len(samples) == row["audio_samples"] > 0.99 * 16000
        assert row["video_path"] == str((media_root / "goodmp4____.mp4").resolve()) or \
            row["youtube_id"] == "goodwebm___"
    # The shard files record their line range and a hash of their lines.
    extras = [read_extra(p) for p in shard_paths(DataLayout(data_dir), "clips")]
    assert [(e["first_line"], e["last_line"]) for e in extras] == [
        (1, 4), (5, 8), (9, 12), (13, 16), (17, 17)]
    assert all(len(e["lines_sha256"]) == 64 for e in extras)

    # Re-run: every shard unchanged, no new rows, files untouched.
    before = {p: p.stat().st_mtime_ns for p in shard_paths(DataLayout(data_dir), "clips")}
    params = _params(manifest, media_root, data_dir)
    summary = ingest_flow(params)
    assert summary.shards_skipped == summary.shards == 5
    assert summary.clips == len(expected)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert _clip_rows(data_dir).height == len(expected)

    # A run killed before shard 2 was written (its file gone, a temp file left): only it is redone.
    lost = shard_paths(DataLayout(data_dir), "clips")[2]
    lost.unlink()
    (lost.parent / f".{lost.name}.tmp-1-deadbeef").write_bytes(b"partial")
    summary = ingest_flow(params)
    assert summary.shards_skipped == 4
    assert _clip_rows(data_dir).height == len(expected)

    # Appended lines (and media that appeared since) redo only the last shard and new ones.
    make_good(media_root / "missingvid_.mp4")
    with manifest.open("a") as fh:
        fh.write("lateaddition,0,1,0.5,0.5\nmissingvid_,0.5,1.0,0.5,0.5\n")
    summary = ingest_flow(params)
    # Shard 1 (line 5 names missingvid_, now present) and shard 4 (lines 17-19) are redone.
    assert (summary.shards, summary.shards_skipped) == (5, 3)
    status = clip_status(DataLayout(data_dir))
    assert status.height == len(expected) + 2
    assert status.filter(pl.col("line_no") == 5)["status"][0] == "ok"
    assert status.filter(pl.col("line_no") == 19)["status"][0] == "ok"
    assert status.filter(pl.col("line_no") == 18)["status"][0] == "invalid_row"
    assert status.select(pl.struct("manifest", "line_no").is_unique().all()).item()


def test_cli_rejects_bad_parameters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flows.params import IngestParams

    def ingest(*flags: str) -> int:
        return main(["ingest", "--data-dir", str(tmp_path / "d"), *flags])

    assert ingest("--manifest", str(tmp_path / "absent.csv"), "--media-root", str(tmp_path)) == 2
    assert "manifest not found" in capsys.readouterr().err
    manifest = _write_manifest(tmp_path / "m_train.csv", ["goodmp4____,0,1,0.5,0.5"])
    assert ingest("--manifest", str(manifest), "--media-root", str(tmp_path),
                  "--shard-size", "0") == 2
    assert "shard_size" in capsys.readouterr().err
    assert ingest("--manifest", str(manifest), "--media-root", str(tmp_path / "no-such-dir")) == 2
    assert "media root not found" in capsys.readouterr().err
    # A template without {id} is refused before any work.
    assert ingest("--manifest", str(manifest), "--media-root", str(tmp_path), "--download",
                  "--url-template", "http://127.0.0.1:1/video.mp4") == 2
    assert "url_template must be an http(s) URL containing {id}" in capsys.readouterr().err
    # A manifest whose name does not say its split is refused before any work, naming the fix;
    # --split names it instead.
    latest = _write_manifest(tmp_path / "avspeech_latest.csv", ["goodmp4____,0,1,0.5,0.5"])
    assert ingest("--manifest", str(latest), "--media-root", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "avspeech_latest.csv" in err and "--split" in err
    args = build_parser().parse_args([
        "ingest", "--manifest", str(latest), "--media-root", str(tmp_path), "--data-dir",
        str(tmp_path / "d"), "--split", "dev"])
    _, params = command_params(args, "s2f ingest") or (None, None)
    assert isinstance(params, IngestParams) and params.split == "dev"
    params.check_split_names()  # no error: the explicit split wins


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        _Handler.requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture()
def loopback_server(tmp_path: Path, media_set: dict[str, Path]) -> Iterator[str]:
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy2(media_set["good_mp4"], served / "dlokvideo__.mp4")
    _Handler.requests = []
    handler = functools.partial(_Handler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{{id}}.mp4"
    finally:
        server.shutdown()
        server.server_close()


def test_download_on_loopback(prefect_server: None, loopback_server: str, tmp_path: Path,
                              data_dir: Path) -> None:
    from flows.ingest import ingest_flow

    media_root = tmp_path / "downloads"  # absent: --download creates it
    manifest = _write_manifest(tmp_path / "dl_test.csv", [
        "dlokvideo__,0.5,1.5,0.5,0.5", "dlokvideo__,0,1,0.5,0.5", "dl404video_,0,1,0.5,0.5"])
    params = _params(manifest, media_root, data_dir, download=True, url_template=loopback_server,
                     download_retries=1, download_retry_delay_s=0.05)
    summary = ingest_flow(params)
    assert summary.counts == {"ok": 2, "download_failed": 1}
    assert (media_root / "dlokvideo__.mp4").is_file()
    assert sorted(p.name for p in media_root.iterdir()) == ["dlokvideo__.mp4"]
    status = clip_status(DataLayout(data_dir))
    failed = status.filter(pl.col("status") == "download_failed")
    assert "404" in failed["error"][0] and "dl404video_" in failed["error"][0]
    # yt-dlp's generic extractor makes one GET per attempt on a 404 and two (probe, download)
    # on success: the failing id was tried twice (one retry), the good one once for two clips.
    assert [r for r in _Handler.requests if "dl404video_" in r] == ["/dl404video_.mp4"] * 2
    assert [r for r in _Handler.requests if "dlokvideo__" in r] == ["/dlokvideo__.mp4"] * 2
    # Re-run: nothing changed, so dead links are not retried and nothing is fetched again.
    _Handler.requests = []
    assert ingest_flow(params).shards_skipped == 1
    assert _Handler.requests == []


def test_fingerprint_tracks_media_and_download_only_where_media_is_missing(
        media_set: dict[str, Path], tmp_path: Path) -> None:
    from s2f.ingest.manifest import plan_manifests
    from s2f.ingest.shard import read_shard_lines, shard_fingerprint

    media_root = tmp_path / "media"
    media_root.mkdir()
    shutil.copy2(media_set["good_mp4"], media_root / "goodmp4____.mp4")
    manifest = _write_manifest(tmp_path / "f_train.csv", ["goodmp4____,0,1,0.5,0.5",
                                                    "absentvideo,0,1,0.5,0.5"])
    first, second = plan_manifests([manifest], 1)[0].shards
    fingerprints = {}
    for name, plan in (("present", first), ("absent", second)):
        records, sha = read_shard_lines(plan)
        ids = [r["youtube_id"] for r in records]
        fingerprints[name] = [shard_fingerprint(plan, sha, ids, media_root, flag)
                              for flag in (False, True)]
    assert fingerprints["present"][0] == fingerprints["present"][1]
    assert fingerprints["absent"][0] != fingerprints["absent"][1]
    before = fingerprints["absent"][0]
    shutil.copy2(media_set["good_mp4"], media_root / "absentvideo.mp4")
    records, sha = read_shard_lines(second)
    assert shard_fingerprint(second, sha, ["absentvideo"], media_root, False) != before


def test_a_crashing_shard_fails_the_run_after_the_others_finish(
        prefect_server: None, tmp_path: Path, data_dir: Path) -> None:
    from flows.ingest import IngestParams, ingest_flow

    media_root = tmp_path / "media"
    media_root.mkdir()
    good = _write_manifest(tmp_path / "fine_train.csv", ["invalid line", "novideohere,0,1,0.5,0.5"])
    blocked = _write_manifest(tmp_path / "blocked_train.csv", ["novideohere,0,2,0.5,0.5"])
    # A file where the manifest's shard directory should be: writing the shard fails (like a
    # full or read-only disk), which is not a property of the input and must not pass silently.
    layout = DataLayout(data_dir).ensure()
    layout.table_dir("clips").mkdir(parents=True)
    (layout.table_dir("clips") / "blocked_train").write_text("in the way")
    params = IngestParams(manifests=[blocked, good], media_root=media_root, data_dir=data_dir,
                          shard_size=1)
    with pytest.raises(RuntimeError, match="1 shards failed"):
        ingest_flow(params)
    status = clip_status(layout)
    assert list(zip(status["manifest"], status["status"], strict=True)) == [
        ("fine_train", "invalid_row"), ("fine_train", "missing_media")]
