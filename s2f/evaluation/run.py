"""Evaluate a registered voice encoder (and face decoder) on the dev or test split, end to end.

`evaluate_model` loads both models from MLflow, predicts features from 3 s and 6 s of each
clip's audio, scores them (`scores`), draws the figures (`figures`), logs the run to MLflow and
appends a row to the `evaluations` table (`record`). Beside the model it scores, in the same
way, the controls that need no training: the mean-face baseline (`mean_face_`), the F0-only
ridge (`f0_ridge_`: the clip's median F0 → face feature, fitted on train; `acoustic`) and, on the
demo corpus, the oracle ceiling (`oracle_`: ridge from the identity's exact espeak settings to
the face feature, fitted on the train identities). Retrieval is scored twice: per identity
(`recall_at_K`, SF2F's protocol) and with the paper's protocol (`paper_recall_at_K_<distance>`);
faces without a voice of the scored split (distractors) join both pools. On real voice-face
pairs (clips with a true face image) `s2f.evaluation.pairs` adds the paper's reconstructions
beside ours as image-level rows, the gender-only control, demographic agreement and a contact
sheet.

Test is read once: `evaluate_model(role="test")` refuses a model version (or a control's
training run; an untracked control is known by its weights' sha1, `known_by_weights`) that
already has a test row on this snapshot (`TestAlreadyScored`); `evaluate` returns that row
instead of scoring again. Dev rows can be rescored at will.

    python -m s2f.evaluation.run DATA_DIR [MODEL_URI [DECODER_URI]]
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from s2f.devices import DEFAULT_DEVICE, resolve_device
from s2f.evaluation import figures, pairs
from s2f.evaluation.acoustic import (
    acoustic_ridge_fit,
    acoustic_statistics_of,
    f0_ridge_fit,
    median_f0_of,
)
from s2f.evaluation.data import (
    DEFAULT_DEV_FRACTION,
    EvalRole,
    EvalSet,
    EvaluationDataError,
    FeatureMean,
    FeatureSink,
    clip_details,
    default_identities_path,
    distractor_features,
    face_crops,
    feed_training_features,
    group_means,
    load_eval_set,
    load_identities,
    training_clips,
)
from s2f.evaluation.landmarks import detect_landmarks
from s2f.evaluation.metrics import DEFAULT_BOOTSTRAP
from s2f.evaluation.pairs import has_face_images
from s2f.evaluation.record import (
    EvaluationResult,
    find_test_row,
    log_to_mlflow,
    new_evaluation_id,
    write_evaluation_row,
)
from s2f.evaluation.scores import (
    CRANIO_SCHEMA,
    PAPER_RECALL_SCHEMA,
    PRIMARY_SECONDS,
    RECALL_SCHEMA,
    SECONDS,
    SIMILARITY_SCHEMA,
    VOICE_SCHEMA,
    Scores,
    StreamedRidge,
    craniofacial_scores,
    diversity_scores,
    frame,
    paper_retrieval_scores,
    reconstruction_scores,
    retrieval_scores,
    similarity_scores,
    voice_design,
    voice_parameter_scores,
)
from s2f.media.packs import AudioReader, AudioReadError
from s2f.progress import Progress
from s2f.registry.inference import (
    FACE_DECODER_NAME,
    VOICE_ENCODER_NAME,
    LoadedModel,
    decode_features,
    encode_waves,
    load_registered_model,
    model_uri,
)
from storage.layout import DataLayout

DEFAULT_MODEL_URI = model_uri(VOICE_ENCODER_NAME, "challenger")
DEFAULT_DECODER_URI = model_uri(FACE_DECODER_NAME, "challenger")
# Controls whose predictions are decoded and classified on real pairs (`<name>_s2f_gender_...`).
CONTROL_DEMOGRAPHICS = ("mean_face", "f0_ridge", "gender_only")
WEIGHTS_TAG = "weights-sha1:"  # in an untracked model's URI: what its test row is found by
# Evaluation waves read and encoded at once: the waves are dropped once encoded, so memory holds
# this many (~384 KB each at 6 s), not the split's. A multiple of `encode_waves`' batch of 8, so
# the encoder sees the batches it saw when every wave was read first (same predictions).
WAVE_READ_BLOCK = 64


def _grid_rows(es: EvalSet, limit: int) -> list[int]:
    """Up to `limit` clips, one per identity, for the face grid."""
    seen: set[str] = set()
    out: list[int] = []
    for i, ident in enumerate(es.identities):
        if ident not in seen:
            seen.add(ident)
            out.append(i)
        if len(out) == limit:
            break
    return out


def _identity_params(identities_path: Path, names: list[str]) -> pl.DataFrame:
    """One row of numeric voice parameters per identity, in `names` order."""
    df = load_identities(identities_path).unique("identity", keep="first", maintain_order=True)
    drop = [c for c in df.columns if c in ("youtube_id", "youtube_ids")]
    df = df.drop(drop)
    return pl.DataFrame({"identity": names}).join(df, on="identity", how="left",
                                                  maintain_order="left")


class TestAlreadyScored(RuntimeError):
    """The model version already has its one test row on this snapshot (`row`): read it back."""

    def __init__(self, message: str, row: dict[str, Any]) -> None:
        super().__init__(message)
        self.row = row


def _dev_fraction(encoder: LoadedModel) -> float:
    try:
        return float(encoder.params.get("dev_fraction", DEFAULT_DEV_FRACTION))
    except ValueError:
        return DEFAULT_DEV_FRACTION


def _seed(encoder: LoadedModel) -> int | None:
    try:
        return int(encoder.params["seed"]) if "seed" in encoder.params else None
    except ValueError:
        return None


def oracle_fit(es: EvalSet, identities_path: Path, train: pl.DataFrame
               ) -> tuple[StreamedRidge, np.ndarray] | None:
    """The oracle ceiling, to be fitted: a ridge from the identity's exact voice settings
    (`scores.voice_design`) to the face feature over the train role's clips (`train`:
    `training_clips`; their features are added in blocks), and the design of each clip of
    `es` to predict from. None when the identities table has no voice settings (not the demo
    corpus)."""
    table = load_identities(identities_path)
    try:
        voice_design(table)
    except ValueError:
        return None
    by_video = table.unique("youtube_id", keep="first")

    def design_of(ids: list[str]) -> np.ndarray:
        rows = pl.DataFrame({"youtube_id": ids}).join(by_video, on="youtube_id", how="left",
                                                      maintain_order="left")
        if rows["identity"].null_count():
            raise EvaluationDataError(f"{identities_path}: videos without an identity")
        return voice_design(rows)

    x_train, x_eval = design_of(train["youtube_id"].to_list()), design_of(es.youtube_ids)
    return StreamedRidge(x_train), x_eval


@dataclass
class _Pools:
    """What a prediction is ranked against: the per-identity pool (identity means, then the
    distractor faces) with each clip's entry in it, and the distractors for the paper's pool."""

    identity_pool: np.ndarray
    target: np.ndarray
    distractors: np.ndarray

    @classmethod
    def of(cls, es: EvalSet, distractors: np.ndarray) -> _Pools:
        _, pool, target = es.identity_pool()
        if len(distractors):
            pool = np.concatenate([pool, distractors.astype(pool.dtype)])
        return cls(pool, target, distractors)


@dataclass
class _Scored:
    """The scores gathered so far: flat metrics and the rows of each score table."""

    flat: dict[str, float] = field(default_factory=dict)
    similarity: list[dict[str, object]] = field(default_factory=list)
    recall: list[dict[str, object]] = field(default_factory=list)
    paper: list[dict[str, object]] = field(default_factory=list)
    controls: dict[str, np.ndarray] = field(default_factory=dict)  # control -> its predictions
    rank_device: torch.device | None = None  # where retrieval ranks (None: numpy, the CPU)

    def add(self, pred: np.ndarray, es: EvalSet, pools: _Pools, method: str,
            seconds: float | None, n_boot: int, seed: int) -> None:
        """Similarity, identity retrieval and the paper's retrieval of one prediction (its
        NaN rows, clips it has no prediction for, left out)."""
        f, r = similarity_scores(pred, es.features, method, seconds)
        self.flat.update(f)
        self.similarity += r
        f, r = retrieval_scores(pred, pools.identity_pool, pools.target, method, seconds,
                                n_boot, seed, device=self.rank_device)
        self.flat.update(f)
        self.recall += r
        f, r = paper_retrieval_scores(pred, es.features, method, seconds, n_boot, seed,
                                      distractors=pools.distractors, device=self.rank_device)
        self.flat.update(f)
        self.paper += r


def known_by_weights(encoder: LoadedModel) -> LoadedModel:
    """An untracked model (no registered version, no training run: a control trained with
    tracking off) is known by its weights: its URI gains their sha1, so its test row can be
    found again and it is test-scored once, like a model version."""
    ref = encoder.ref
    if ref.version is not None or ref.run_id is not None or WEIGHTS_TAG in ref.uri:
        return encoder
    from s2f.train.distributed import state_digest

    uri = f"{ref.uri} {WEIGHTS_TAG}{state_digest(encoder.module)[:16]}"
    return replace(encoder, ref=replace(ref, uri=uri))


def _refuse_second_test(layout: DataLayout, encoder: LoadedModel, es: EvalSet, kind: str) -> None:
    """Raise `TestAlreadyScored` when this version (or control run, or untracked model's
    weights) has its test row already."""
    done = find_test_row(layout, encoder.ref.name, encoder.ref.version, encoder.ref.run_id,
                         es.split_snapshot_id, kind, encoder.ref.uri)
    if done is not None:
        raise TestAlreadyScored(
            f"{encoder.ref.label()} already has its test row {done['evaluation_id']} on "
            f"snapshot {es.split_snapshot_id}: the test split is scored once per version", done)


def _encode_batch(encoder: LoadedModel) -> int:
    """Voices per forward: 8 on the CPU (as before), 32 on a GPU (fills it better; the
    encoder is in eval mode, so the batch does not change a clip's features)."""
    device = next(encoder.module.parameters(), torch.empty(0)).device
    return 8 if device.type == "cpu" else 32


def _on_device(encoder: LoadedModel | None, device: torch.device) -> LoadedModel | None:
    """An already loaded encoder (a control from memory) moved to the evaluation's device."""
    return None if encoder is None else replace(encoder, module=encoder.module.to(device))


def _predict(encoder: LoadedModel, es: EvalSet, seconds: Sequence[float]
             ) -> dict[float, np.ndarray]:
    """The encoder's features of every clip of `es` from `seconds` of its speech: waves read
    `WAVE_READ_BLOCK` at a time, encoded at every length, dropped; only predictions are kept."""
    blocks: dict[float, list[np.ndarray]] = {s: [] for s in seconds}
    reader = AudioReader()
    for i in range(0, len(es), WAVE_READ_BLOCK):
        waves = _read_block(reader, es, i)
        for s in seconds:
            pred = encode_waves(encoder, waves, s, batch_size=_encode_batch(encoder))
            if pred.shape[1] != es.features.shape[1]:
                raise EvaluationDataError(
                    f"{encoder.ref.label()} predicts {pred.shape[1]}-D features but the test "
                    f"features of {es.encoder!r} are {es.features.shape[1]}-D")
            blocks[s].append(pred)
    return {s: np.concatenate(b) for s, b in blocks.items()}


def _read_block(reader: AudioReader, es: EvalSet, start: int) -> list[np.ndarray]:
    """The waves of `WAVE_READ_BLOCK` clips from `start` (`s2f.media.packs`: a pack's members
    in offset order); an unreadable clip is an EvaluationDataError naming it: every clip of
    the split is scored or none is."""
    waves = reader.waves(es.audio_paths[start:start + WAVE_READ_BLOCK])
    for n, wave in enumerate(waves):
        if isinstance(wave, AudioReadError):
            raise EvaluationDataError(f"clip {es.clip_keys[start + n]}: {wave}; re-run `s2f "
                                      "ingest` to cut its audio again")
    return [w for w in waves if not isinstance(w, AudioReadError)]


def _score_model(preds: dict[float, np.ndarray], es: EvalSet, pools: _Pools, n_boot: int,
                 seed: int, scored: _Scored, bar: Progress) -> None:
    """Score the predictions at each input length."""
    for s, pred in preds.items():
        scored.add(pred, es, pools, "model", s, n_boot, seed)
        scored.flat.update(diversity_scores(pred, es.features, s))
        bar.update(1, done=f"scored {s:g} s of speech")


def _score_controls(train_layout: DataLayout, es: EvalSet, identities_path: Path | None,
                    train: pl.DataFrame, pools: _Pools, n_boot: int, seed: int,
                    scored: _Scored) -> list[str]:
    """Score the mean training face, the F0-only and all-statistic acoustic ridges and (with
    voice settings) the oracle; returns their names. `train`: `training_clips` of
    `train_layout` (read once); its features are read in one pass, shard by shard, into all
    the fits."""
    mean = FeatureMean()
    train_paths = [train_layout.resolve(p) for p in train["audio_path"].to_list()]
    eval_f0, eval_stats = median_f0_of(es.audio_paths), acoustic_statistics_of(es.audio_paths)
    f0_fit, f0_info = f0_ridge_fit(median_f0_of(train_paths), eval_f0)
    scored.flat.update(f0_info)  # no fit: no voiced train clip (synthetic tones); it says so
    ac_fit, ac_info = acoustic_ridge_fit(acoustic_statistics_of(train_paths), eval_stats)
    scored.flat.update(ac_info)
    oracle = None if identities_path is None else oracle_fit(es, identities_path, train)
    fits: list[FeatureSink | None] = [f0_fit, ac_fit, None if oracle is None else oracle[0]]
    feed_training_features(train_layout, es.encoder, train,
                           [mean, *(f for f in fits if f is not None)])
    controls: list[tuple[str, np.ndarray]] = [
        ("mean_face", np.broadcast_to(mean.mean(), es.features.shape))]
    if f0_fit is not None:
        controls.append(("f0_ridge", f0_fit.predict(eval_f0)))
    if ac_fit is not None:
        controls.append(("acoustic_ridge", ac_fit.predict(eval_stats)))
    if oracle is not None:
        controls.append(("oracle", oracle[0].predict(oracle[1])))
    for method, control in controls:
        scored.add(control, es, pools, method, None, n_boot, seed)
        scored.controls[method] = control
    return [m for m, _ in controls]


@dataclass
class _Decoded:
    """Our decoder's images of the true (F2F) and predicted (S2F) features of `subset`."""

    subset: np.ndarray
    f2f: np.ndarray
    s2f: np.ndarray


def _score_reconstructions(layout: DataLayout, es: EvalSet, decoder: LoadedModel,
                           voice_pred: np.ndarray, max_reconstructions: int, grid_size: int,
                           seed: int, flat: dict[str, float], figs: dict[str, Any]
                           ) -> tuple[list[dict[str, object]], _Decoded]:
    """Decode true and predicted features of up to `max_reconstructions` clips: landmark and
    image errors, craniofacial correlations (rows returned), the face grid figure."""
    rng = np.random.default_rng(seed)
    subset = np.sort(rng.permutation(len(es))[:max_reconstructions])
    rec_true = decode_features(decoder, es.features[subset])
    rec_voice = decode_features(decoder, voice_pred[subset])
    flat.update(reconstruction_scores(rec_true.landmarks, rec_voice.landmarks,
                                      rec_true.images, rec_voice.images))
    # Craniofacial measurements on landmarks dlib detects on the rendered faces (paper).
    det_true, det_voice = detect_landmarks(rec_true.images), detect_landmarks(rec_voice.images)
    f, cranio_rows = craniofacial_scores(det_true.landmarks, det_voice.landmarks, seed)
    flat.update(f)
    flat["cranio_hog_fraction"] = float(np.mean(np.concatenate(
        [det_true.hog_found, det_voice.hog_found])))
    pos = {int(j): i for i, j in enumerate(subset)}
    rows = [i for i in _grid_rows(es, grid_size) if i in pos]
    crops = face_crops(layout, [es.clip_keys[i] for i in rows])
    figs["face_grid"] = figures.face_grid(
        [f"{es.identities[i]}" for i in rows], [crops.get(es.clip_keys[i]) for i in rows],
        rec_true.images[[pos[i] for i in rows]], rec_voice.images[[pos[i] for i in rows]])
    return cranio_rows, _Decoded(subset, rec_true.images, rec_voice.images)


def _control_images(decoder: LoadedModel, decoded: _Decoded, controls: dict[str, np.ndarray],
                    n_clips: int) -> dict[str, pairs.Demography]:
    """Our decoder's images of each control's predictions on `decoded.subset`, classified
    (`<control>_s2f`): the gender and age agreement a model that knows only the mean face, the
    pitch or the gender would get through the same decoder and classifier."""
    sets = {}
    for name in CONTROL_DEMOGRAPHICS:
        if name not in controls:
            continue
        images = decode_features(decoder, np.asarray(controls[name])[decoded.subset]).images
        full: list[np.ndarray | None] = [None] * n_clips
        for j, i in enumerate(decoded.subset):
            full[int(i)] = images[j]
        sets[f"{name}_s2f"] = pairs.classify(full)
    return sets


def _score_pairs(train_layout: DataLayout, es: EvalSet, details: pl.DataFrame,
                 train: pl.DataFrame,
                 decoded: _Decoded | None, pools: _Pools, n_boot: int, seed: int,
                 scored: _Scored, figs: dict[str, Any],
                 decoder: LoadedModel | None = None) -> list[str]:
    """On real pairs: the gender-only control, the image-level rows of every reconstruction
    (ours and the paper's), demographic agreement (of the controls' decoded images too) and
    the contact sheet (`s2f.evaluation.pairs`). Returns the names of the rows added."""
    dim = es.features.shape[1]
    true_paths = details["face_image_path"].to_list()
    true_images = pairs.load_images(true_paths)
    true_demo = pairs.classify_paths(true_paths)
    train_details = clip_details(train_layout, train["clip_key"].to_list())
    train_paths = train_details["face_image_path"].to_list()
    train_demo = pairs.classify_paths(train_paths)
    train_gender, _ = pairs.speaker_gender(train_details["gender"].to_list(), train_demo.gender)
    eval_gender, from_classifier = pairs.speaker_gender(details["gender"].to_list(),
                                                       true_demo.gender)
    scored.flat["gender_source_classifier"] = float(from_classifier)
    gender_means = pairs.GenderMeans(train_gender)
    feed_training_features(train_layout, es.encoder, train, [gender_means])
    rows = {"gender_only": gender_means.predict(eval_gender, dim)}
    scored.controls["gender_only"] = rows["gender_only"]
    paper_s2f = pairs.load_images(details["paper_s2f_path"].to_list())
    s2f_paths, f2f_paths = details["paper_s2f_path"].to_list(), details["paper_f2f_path"].to_list()
    rows["paper_s2f_image"] = pairs.path_features(s2f_paths, dim)
    rows["paper_f2f_image"] = pairs.path_features(f2f_paths, dim)
    demo_sets = {"paper_s2f": pairs.classify_paths(s2f_paths),
                 "paper_f2f": pairs.classify_paths(f2f_paths)}
    ours: dict[int, np.ndarray] = {}
    if decoded is not None:
        for name, images in (("our_s2f", decoded.s2f), ("our_f2f", decoded.f2f)):
            full: list[np.ndarray | None] = [None] * len(es)
            for j, i in enumerate(decoded.subset):
                full[int(i)] = images[j]
            rows[f"{name}_image"] = pairs.image_features(full, dim)
            demo_sets[name] = pairs.classify(full)
        ours = {int(i): decoded.s2f[j] for j, i in enumerate(decoded.subset)}
    for method, pred in rows.items():
        scored.add(pred, es, pools, method, None, n_boot, seed)
    if decoded is not None and decoder is not None:
        demo_sets |= _control_images(decoder, decoded, scored.controls, len(es))
    flat, demo_figs = pairs.demographic_scores(demo_sets, true_demo, details, n_boot, seed)
    scored.flat.update(flat)
    figs.update(demo_figs)
    figs["contact_sheet"] = pairs.contact_sheet(es, true_images, paper_s2f, ours)
    return list(rows)


def _voice_rows(es: EvalSet, identities_path: Path | None, pred: np.ndarray,
                flat: dict[str, float]) -> list[dict[str, object]]:
    """With the demo corpus's identities: how well each voice parameter is read back from the
    per-identity mean prediction (rows returned, flat metrics added)."""
    if identities_path is None:
        return []
    names, pool, target = es.identity_pool()
    params = _identity_params(identities_path, names)
    pred_by_id = group_means(pred, target, len(names))
    f, rows = voice_parameter_scores(pred_by_id, pool, params.drop("identity"))
    flat.update(f)
    return rows


def evaluate_model(layout: DataLayout, model_uri: str = DEFAULT_MODEL_URI,
                   decoder_uri: str | None = DEFAULT_DECODER_URI,
                   identities_path: Path | None = None, seconds: Sequence[float] = SECONDS,
                   n_boot: int = DEFAULT_BOOTSTRAP, grid_size: int = 8, max_reconstructions: int = 1000,
                   device: str = DEFAULT_DEVICE, record: bool = True, seed: int = 0,
                   role: EvalRole = "test", kind: str = "model",
                   encoder: LoadedModel | None = None,
                   train_layout: DataLayout | None = None) -> EvaluationResult:
    """Score `model_uri` (+ `decoder_uri`; None skips the reconstruction metrics) on the `role`
    split of `layout`. `identities_path` None: the demo corpus's identities.parquet if present,
    else YouTube ids are the identities. `record`: log to MLflow and write the table row.
    `encoder`: an already loaded model (an unregistered control), used instead of the URI.
    `train_layout`: where the controls' train split is (default `layout`; another data dir when
    scoring a model on data it was not trained beside: `s2f real-pairs --score-on`). `device`
    (auto | cpu | cuda[:N]): the models and the retrieval ranking; metrics stay float32/64.
    Raises `TestAlreadyScored` for a second test evaluation of one version (or control run)."""
    if PRIMARY_SECONDS not in seconds:
        raise ValueError(f"seconds must include {PRIMARY_SECONDS} (the promotion gate's input)")
    dev = resolve_device(device)  # refuses a bad name before anything is loaded
    encoder = known_by_weights(_on_device(encoder, dev) or load_registered_model(model_uri, dev))
    dev_fraction = _dev_fraction(encoder)
    identities_path = identities_path or default_identities_path(layout)
    es = load_eval_set(layout, encoder.face_encoder, identities_path, role, dev_fraction)
    if role == "test":
        _refuse_second_test(layout, encoder, es, kind)
    pools = _Pools.of(es, distractor_features(layout, es.encoder, role)[1])
    details = clip_details(layout, es.clip_keys)
    on_pairs = has_face_images(details)
    bar = Progress(1 + len(seconds) + 2 + (decoder_uri is not None) + on_pairs, f"evaluate "
                   f"{encoder.ref.label()} on {len(es)} {role} clips", "phase", every_seconds=30)
    preds = _predict(encoder, es, seconds)
    bar.update(1, done=f"read and encoded {len(es)} {role} voices")

    scored = _Scored(rank_device=None if dev.type == "cpu" else dev)
    scored.flat["n_distractors"] = float(len(pools.distractors))
    _score_model(preds, es, pools, n_boot, seed, scored, bar)
    train_layout = train_layout or layout
    train = training_clips(train_layout, es.encoder, dev_fraction)
    controls = _score_controls(train_layout, es, identities_path, train, pools, n_boot, seed,
                               scored)
    bar.update(1, done="scored the controls: " + ", ".join(controls))

    cranio_rows: list[dict[str, object]] = []
    figs = {"recall_at_k": figures.recall_curves(frame(scored.recall, RECALL_SCHEMA))}
    decoder: LoadedModel | None = None
    decoded: _Decoded | None = None
    if decoder_uri is not None:
        decoder = load_registered_model(decoder_uri, dev)
        cranio_rows, decoded = _score_reconstructions(
            layout, es, decoder, preds[PRIMARY_SECONDS], max_reconstructions, grid_size, seed,
            scored.flat, figs)
        bar.update(1, done=f"decoded and measured {len(decoded.subset)} faces with "
                           f"{decoder.ref.label()}")
    if on_pairs:
        added = _score_pairs(train_layout, es, details, train, decoded, pools, n_boot, seed,
                             scored, figs, decoder)
        bar.update(1, done="real pairs: " + ", ".join(added))

    voice_rows = _voice_rows(es, identities_path, preds[PRIMARY_SECONDS], scored.flat)
    cranio = frame(cranio_rows, CRANIO_SCHEMA)
    voice = frame(voice_rows, VOICE_SCHEMA)
    figs["correlations"] = figures.correlation_table(cranio, voice)
    bar.update(1, done="voice-parameter correlations")
    bar.close()

    result = EvaluationResult(
        evaluation_id=new_evaluation_id(), created_at=datetime.now(UTC), model=encoder.ref,
        decoder=decoder.ref if decoder else None, face_encoder=es.encoder,
        split_snapshot_id=es.split_snapshot_id, features_hash=es.features_hash,
        identity_source=es.identity_source, n_clips=len(es),
        n_identities=len(set(es.identities)),
        scores=Scores(scored.flat, frame(scored.similarity, SIMILARITY_SCHEMA),
                      frame(scored.recall, RECALL_SCHEMA), cranio, voice,
                      frame(scored.paper, PAPER_RECALL_SCHEMA)),
        figures=figs, role=role, kind=kind, seed=_seed(encoder))
    if record:
        result.mlflow_run_id = log_to_mlflow(result, layout.mlflow_artifacts)
        write_evaluation_row(layout, result)
    return result


def evaluate(layout: DataLayout, model_uri: str = DEFAULT_MODEL_URI,
             decoder_uri: str | None = DEFAULT_DECODER_URI, role: EvalRole = "test",
             **kwargs: Any) -> dict[str, Any]:
    """`evaluate_model` as a table row (metrics as a dict); for test, the version's existing
    test row when it has one (read back, not rescored), with `reused` True."""
    try:
        row = evaluate_model(layout, model_uri, decoder_uri, role=role, **kwargs).row()
        row["metrics"] = dict(row["metrics"])
        row["reused"] = False
        return row
    except TestAlreadyScored as done:  # the stored row, as found (no second load or scan)
        return {**done.row, "reused": True}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    layout = DataLayout(Path(args[0]))
    # Absolute SQLite URI under the data directory unless a tracking server is configured.
    os.environ.setdefault("MLFLOW_TRACKING_URI", layout.mlflow_tracking_uri)
    result = evaluate_model(layout, *(args[1:3]))
    for k, v in sorted(result.metrics.items()):
        print(f"{k:40s} {v:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
