"""The evaluation's parts for real voice-face pairs, on small data made here: still images
through preprocessing, the F0-only ridge, the gender-only control, distractors and missing
rows in the retrieval protocols, the report.

    pytest tests/test_pairs_evaluation.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED_FACES


def _a_face_photo() -> Path:
    """A bundled photo with one clear face (the annotations say where)."""
    for path in sorted(SHARED_FACES.glob("*.jpg")):
        return path
    raise AssertionError("no bundled photos")


def test_decode_image_reads_refuses_and_explains(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from s2f.media import image as media_image
    from s2f.media.video import DecodedClip, DecodeError

    good = media_image.decode_image("k", _a_face_photo())
    assert isinstance(good, DecodedClip) and good.frames.ndim == 4 and good.frames.shape[0] == 1
    assert good.frames.dtype == np.uint8 and good.frames.flags.writeable
    assert good.times_s == [0.0] and good.decoder == "image"

    missing = media_image.decode_image("k", tmp_path / "none.jpg")
    assert isinstance(missing, DecodeError) and "no such file" in missing.message
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    bad = media_image.decode_image("k", broken)
    assert isinstance(bad, DecodeError) and "not a readable image" in bad.message

    big = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(big)
    monkeypatch.setattr(media_image, "MAX_IMAGE_PIXELS", 300 * 200 - 1)
    refused = media_image.decode_image("k", big)
    assert isinstance(refused, DecodeError) and "300x200 pixels is over" in refused.message


@pytest.mark.slow
def test_image_rows_go_through_preprocessing(tmp_path: Path) -> None:
    """A row with a face image is one frame through detect/align/embed; a broken image and an
    image without a face get their statuses and reasons; the rest goes on."""
    from PIL import Image

    from s2f.preprocess.clips import embed_images, preprocess_clips

    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (160, 160, 3), np.uint8)).save(noise)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"nope")
    face = _a_face_photo()
    centre = {"hint_x": 0.5, "hint_y": 0.5}  # as the pairs source writes
    rows = [{"clip_key": "face", "status": "ok", "face_image_path": str(face), **centre},
            {"clip_key": "distractor", "status": "face_only", "face_image_path": str(face),
             **centre},
            {"clip_key": "noise", "status": "ok", "face_image_path": str(noise), **centre},
            {"clip_key": "broken", "status": "ok", "face_image_path": str(broken), **centre},
            {"clip_key": "skipped", "status": "missing_face", "face_image_path": None}]
    tables = preprocess_clips(rows, progress=False)
    status = dict(zip(tables.preprocess["clip_key"].to_pylist(),
                      tables.preprocess["status"].to_pylist(), strict=True))
    assert status == {"face": "ok", "distractor": "ok", "noise": "no_face",
                      "broken": "decode_failed"}
    errors = dict(zip(tables.preprocess["clip_key"].to_pylist(),
                      tables.preprocess["error"].to_pylist(), strict=True))
    assert errors["noise"].startswith("no face in the image (track search")
    assert "not a readable image" in errors["broken"]
    feats = {k: np.asarray(f) for k, f in zip(tables.face_features["clip_key"].to_pylist(),
                                              tables.face_features["feature"].to_pylist(),
                                              strict=True)}
    assert set(feats) == {"face", "distractor"}
    assert np.allclose(feats["face"], feats["distractor"])  # same image, same path, same feature

    # The same path for in-memory images (reconstructions): same feature for the same image.
    arr = np.array(Image.open(face).convert("RGB"))
    got = embed_images([arr, np.zeros((64, 64, 3), np.uint8)])
    assert got.found.tolist() == [True, False] and np.isnan(got.features[1]).all()
    assert np.allclose(got.features[0], feats["face"], atol=1e-5)
    assert got.reasons[0] is None and got.reasons[1].startswith("no face in the image")


def test_f0_ridge_is_fitted_on_train_only() -> None:
    from s2f.evaluation.acoustic import f0_ridge

    rng = np.random.default_rng(0)
    f0 = rng.uniform(90, 250, 60)
    direction = rng.normal(size=8)
    feats = (np.log(f0)[:, None] - np.log(f0).mean()) * direction + rng.normal(0, 0.01, (60, 8))
    train_f0, train_feats = f0[:40].copy(), feats[:40]
    train_f0[0] = np.nan  # an unvoiced train clip
    pred, info = f0_ridge(train_f0, train_feats, f0[40:])
    assert pred is not None and pred.shape == (20, 8)
    assert info["f0_ridge_train_voiced"] == 39 and info["f0_ridge_eval_unvoiced"] == 0
    # F0 predicts these features: far closer than the train mean
    assert np.abs(pred - feats[40:]).mean() < 0.3 * np.abs(train_feats.mean(0) - feats[40:]).mean()
    # The fit reads train only: other eval clips, the same prediction for the same F0.
    again, _ = f0_ridge(train_f0, train_feats, np.concatenate([f0[40:45], [np.nan]]))
    assert np.allclose(again[:5], pred[:5])
    # An unvoiced eval clip takes the train median F0.
    median, _ = f0_ridge(train_f0, train_feats, np.array([np.nanmedian(train_f0)]))
    assert np.allclose(again[5], median[0])
    # Nothing voiced in train: no ridge, and the metric says why.
    none, info = f0_ridge(np.full(5, np.nan), train_feats[:5], f0[:3])
    assert none is None and info["f0_ridge_train_voiced"] == 0


def test_gender_only_and_speaker_gender() -> None:
    from s2f.evaluation.pairs import gender_only, speaker_gender

    genders, n_classified = speaker_gender(["male", None, "", None], ["female", "female", "male",
                                                                      None])
    assert genders == ["male", "female", "male", None] and n_classified == 2
    train = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    pred = gender_only(["male", "male", "female"], train, ["female", None, "male", "other"])
    assert np.allclose(pred[0], [0.0, 2.0]) and np.allclose(pred[2], [2.0, 0.0])
    assert np.isnan(pred[1]).all() and np.isnan(pred[3]).all()


def test_distractors_join_the_pool_and_missing_rows_are_not_queried() -> None:
    from s2f.evaluation.scores import paper_retrieval_scores, retrieval_scores, similarity_scores

    rng = np.random.default_rng(1)
    true = rng.normal(size=(20, 16))
    pred = true + rng.normal(0, 0.01, true.shape)  # near-perfect predictions
    pred[3] = np.nan                               # no prediction for clip 3
    distractors = rng.normal(size=(30, 16))
    flat, _ = paper_retrieval_scores(pred, true, "x", None, n_boot=20, distractors=distractors)
    assert flat["paper_pool_size"] == 50 and flat["x_paper_n_queries"] == 19
    assert flat["paper_chance_at_10"] == pytest.approx(10 / 50)
    assert flat["x_paper_recall_at_1_cosine"] == 1.0
    flat, _ = retrieval_scores(pred, np.concatenate([true, distractors]), np.arange(20), "x",
                               None, n_boot=20)
    assert flat["chance_at_10"] == pytest.approx(10 / 50) and flat["x_recall_at_1"] == 1.0
    flat, _ = similarity_scores(pred, true, "x", None)
    assert flat["x_n_queries"] == 19 and np.isfinite(flat["x_cosine_deg_mean"])


def test_pairs_report_has_every_row() -> None:
    from s2f.release.report import PAIRS_ROWS, pairs_report

    m: dict[str, float] = {"paper_pool_size": 50.0, "n_distractors": 30.0, "chance_at_10": 0.2,
                           "gender_source_classifier": 4.0}
    for k in (1, 5, 10):
        m[f"paper_chance_at_{k}"] = k / 50
    for prefix, _, _ in PAIRS_ROWS:
        suffix = "_6s" if prefix == "" else ""
        m[f"{prefix}paper_n_queries{suffix}"] = 20.0
        m[f"{prefix}paper_recall_at_10_cosine{suffix}"] = 0.5
    for name in ("our_s2f", "paper_s2f", "classifier_vs_labels"):
        for attr in ("gender", "age_band"):
            m[f"{name}_{attr}_agreement"] = 0.75
            m[f"{name}_{attr}_majority"] = 0.5
    row = {"metrics": m, "model_name": "enc", "model_version": "3", "evaluation_id": "e1",
           "split_snapshot_id": "s", "n_clips": 20, "n_identities": 12}
    control = {"metrics": {"paper_n_queries_6s": 20.0, "paper_recall_at_10_cosine_6s": 0.2}}
    text = pairs_report(row, control, "/pairs", "/r/sheet.png")
    for _, label, _ in PAIRS_ROWS:
        assert label in text
    assert "shuffled-voice control (same steps)" in text and "chance" in text
    assert "0.75 [" in text and "0.50 (majority)" in text and "/r/sheet.png" in text


def test_pairs_report_shows_every_seed_and_their_spread() -> None:
    from s2f.release.report import pairs_report

    def seed_row(seed: int, r10: float) -> dict[str, object]:
        return {"metrics": {"paper_recall_at_10_cosine_6s": r10, "recall_at_10_6s": r10,
                            "cosine_deg_mean_6s": 23.0, "our_s2f_gender_agreement": 0.8},
                "model_version": str(seed + 1), "seed": seed, "evaluation_id": f"e{seed}"}

    seeds = [seed_row(0, 0.1), seed_row(1, 0.3)]
    text = pairs_report(seeds[1], None, "/pairs", None, seeds, "dev recall@10", "ge2e")
    assert "voice front-end ge2e" in text and "v2 seed 1 (picked)" in text
    assert "mean over 2 seeds" in text and "0.200" in text  # mean of 0.1 and 0.3
    assert "sd over 2 seeds" in text and "0.141" in text    # sample sd
    assert "training seeds" not in pairs_report(seeds[1], None, "/pairs", None, seeds[1:])
