"""`s2f real-pairs` end to end on a small subset of the paper's released pairs.

The subset (a few AVSpeech and VoxCeleb pairs and distractor faces of `../shared/data/
speech2face-page`, linked from a temporary directory, never copied into the repository) goes
through every stage with tiny models; the test checks that the report and the `evaluations`
row hold every row the issue names, that the split is by person, and that `--score-on` scores
the model on another directory. Outside CI, where `../shared` is absent, it skips saying why.

    pytest tests/test_real_pairs_flow.py
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from storage.io import scan
from storage.layout import DataLayout

SHARED_PAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech2face-page"
needs_page = pytest.mark.skipif(
    not SHARED_PAGE.is_dir(),
    reason=f"the paper's released pairs are not at {SHARED_PAGE} (CI lays ../shared beside "
           "the clone; elsewhere point a checkout's sibling shared/ at them)")

SUBFOLDERS = ("Wav", "Face_ori", "Face_f2f", "Face_exg0")


def link_subset(out: Path, avspeech: slice, voxceleb: slice, retrieve: slice) -> Path:
    """A directory in the page's layout whose files are links to the shared copy."""
    for folder, part in (("avspeech_res", avspeech), ("voxceleb", voxceleb)):
        stems = sorted(p.stem for p in (SHARED_PAGE / folder / "Wav").glob("*.flac"))[part]
        for sub in SUBFOLDERS:
            (out / folder / sub).mkdir(parents=True, exist_ok=True)
            for stem in stems:
                src = next((SHARED_PAGE / folder / sub).glob(f"{stem}.*"))
                (out / folder / sub / src.name).symlink_to(src)
    (out / "voxceleb" / "index.html").symlink_to(SHARED_PAGE / "voxceleb" / "index.html")
    (out / "retrieve" / "Face_ori").mkdir(parents=True)
    for src in sorted((SHARED_PAGE / "retrieve" / "Face_ori").glob("*.jpg"))[retrieve]:
        (out / "retrieve" / "Face_ori" / src.name).symlink_to(src)
    return out


@pytest.fixture()
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             request: pytest.FixtureRequest) -> str:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    request.addfinalizer(lambda: mlflow.set_tracking_uri(previous))
    return uri


def test_a_directory_without_the_pages_folders_exits_2(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli import main

    (tmp_path / "pairs").mkdir()
    assert main(["real-pairs", "--pairs", str(tmp_path / "pairs"),
                 "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert all(folder in err for folder in ("avspeech_res", "voxceleb", "retrieve"))
    assert main(["real-pairs", "--data-dir", str(tmp_path / "d")]) == 2  # neither source given


@needs_page
@pytest.mark.slow
def test_real_pairs_end_to_end_and_score_on(prefect_server: None, tracking: str,
                                            tmp_path: Path) -> None:
    from flows.cli import main
    from s2f.evaluation.record import read_evaluations

    pairs = link_subset(tmp_path / "pairs", slice(0, 16), slice(0, 16), slice(0, 8))
    data = tmp_path / "data"
    assert main(["--quiet", "real-pairs", "--pairs", str(pairs), "--data-dir", str(data),
                 "--train-steps", "3", "--decoder-steps", "3", "--min-diversity", "0",
                 "--bootstrap", "10"]) == 0
    layout = DataLayout(data)

    clips = scan(layout, "clips").collect()
    persons = clips.filter(pl.col("person_id").is_not_null()).group_by("person_id").agg(
        pl.col("split").n_unique())
    assert persons["split"].max() == 1  # every person in one split
    assert set(clips["status"]) >= {"ok", "face_only"}
    assert clips.filter(pl.col("manifest") == "pairs_voxceleb")["gender"].null_count() == 0

    test_rows = [r for r in read_evaluations(layout) if r["role"] == "test"]
    model = next(r for r in test_rows if r["kind"] == "model")
    control = next(r for r in test_rows if r["kind"] == "shuffled_control")
    m = dict(model["metrics"])
    for name in ("f0_ridge_paper_recall_at_10_cosine", "gender_only_paper_recall_at_10_cosine",
                 "mean_face_paper_recall_at_10_cosine", "paper_s2f_image_paper_n_queries",
                 "paper_f2f_image_paper_n_queries", "our_s2f_image_paper_n_queries",
                 "our_f2f_image_paper_n_queries", "paper_s2f_gender_agreement",
                 "paper_s2f_age_band_agreement", "our_s2f_gender_agreement",
                 "classifier_vs_labels_gender_agreement", "paper_chance_at_10",
                 "f0_ridge_s2f_gender_agreement", "gender_only_s2f_gender_agreement",
                 "mean_face_s2f_age_band_agreement"):
        assert name in m, name
    assert m["n_distractors"] > 0
    assert m["paper_pool_size"] == model["n_clips"] + m["n_distractors"]
    assert m["paper_s2f_image_paper_n_queries"] == model["n_clips"]  # the paper's faces: found
    assert "paper_recall_at_10_cosine_6s" in dict(control["metrics"])

    reports = sorted((data / "reports").glob("real-pairs-report-*.txt"))
    text = reports[-1].read_text()
    for label in ("our voice encoder", "paper S2F image (Face_exg0)", "paper F2F image",
                  "our F2F image", "mean face", "F0-only ridge", "gender-only",
                  "shuffled-voice control (same steps)", "chance"):
        assert label in text, label
    assert "voice front-end paper" in text
    assert (data / "reports" / f"contact-sheet-{model['evaluation_id']}.png").is_file()

    other = link_subset(tmp_path / "other_pairs", slice(16, 22), slice(0, 0), slice(0, 0))
    assert main(["--quiet", "real-pairs", "--score-on", str(other), "--data-dir",
                 str(data), "--bootstrap", "10"]) == 0
    scored = DataLayout(data / "score_on" / "other_pairs")
    rows = read_evaluations(scored)
    assert [r["role"] for r in rows] == ["test"] and rows[0]["n_clips"] == 6
    assert sorted((scored.root / "reports").glob("real-pairs-report-*.txt"))
