"""Evaluate a registered voice encoder (and face decoder) on the test split, end to end.

`evaluate_model` loads both models from MLflow, predicts features from 3 s and 6 s of each
test clip's audio, scores them (`scores`), draws the figures (`figures`), logs the run to
MLflow and appends a row to the `evaluations` table (`record`).

    python -m s2f.evaluation.run DATA_DIR [MODEL_URI [DECODER_URI]]
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from s2f.audio import load_audio
from s2f.evaluation import figures
from s2f.evaluation.data import (
    EvalSet,
    EvaluationDataError,
    default_identities_path,
    face_crops,
    load_eval_set,
    load_identities,
    training_mean_feature,
)
from s2f.evaluation.record import (
    EvaluationResult,
    log_to_mlflow,
    new_evaluation_id,
    write_evaluation_row,
)
from s2f.evaluation.scores import (
    CRANIO_SCHEMA,
    PRIMARY_SECONDS,
    RECALL_SCHEMA,
    SECONDS,
    SIMILARITY_SCHEMA,
    VOICE_SCHEMA,
    Scores,
    diversity_scores,
    frame,
    reconstruction_scores,
    retrieval_scores,
    similarity_scores,
    voice_parameter_scores,
)
from s2f.inference import (
    FACE_DECODER_NAME,
    VOICE_ENCODER_NAME,
    LoadedModel,
    decode_features,
    encode_waves,
    load_registered_model,
    model_uri,
)
from s2f.progress import Progress
from storage.layout import DataLayout

DEFAULT_MODEL_URI = model_uri(VOICE_ENCODER_NAME, "challenger")
DEFAULT_DECODER_URI = model_uri(FACE_DECODER_NAME, "challenger")


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


def evaluate_model(layout: DataLayout, model_uri: str = DEFAULT_MODEL_URI,
                   decoder_uri: str | None = DEFAULT_DECODER_URI,
                   identities_path: Path | None = None, seconds: Sequence[float] = SECONDS,
                   n_boot: int = 1000, grid_size: int = 8, max_reconstructions: int = 1000,
                   device: str = "cpu", record: bool = True, seed: int = 0) -> EvaluationResult:
    """Score `model_uri` (+ `decoder_uri`; None skips the reconstruction metrics) on the test
    split of `layout`. `identities_path` None: the demo corpus's identities.parquet if present,
    else YouTube ids are the identities. `record`: log to MLflow and write the table row."""
    if PRIMARY_SECONDS not in seconds:
        raise ValueError(f"seconds must include {PRIMARY_SECONDS} (the promotion gate's input)")
    encoder = load_registered_model(model_uri, device)
    identities_path = identities_path or default_identities_path(layout)
    es = load_eval_set(layout, encoder.face_encoder, identities_path)
    names, pool, target = es.identity_pool()
    bar = Progress(1 + len(seconds) + 2 + (decoder_uri is not None), f"evaluate "
                   f"{encoder.ref.label()} on {len(es)} test clips", "phase", every_seconds=30)
    waves = [load_audio(p) for p in es.audio_paths]
    bar.update(1, done=f"read {len(waves)} test voices")

    flat: dict[str, float] = {}
    sim_rows: list[dict[str, object]] = []
    rec_rows: list[dict[str, object]] = []
    preds: dict[float, np.ndarray] = {}
    for s in seconds:
        pred = encode_waves(encoder, waves, s)
        if pred.shape[1] != es.features.shape[1]:
            raise EvaluationDataError(
                f"{encoder.ref.label()} predicts {pred.shape[1]}-D features but the test "
                f"features of {es.encoder!r} are {es.features.shape[1]}-D")
        preds[s] = pred
        f, r = similarity_scores(pred, es.features, "model", s)
        flat.update(f)
        sim_rows += r
        f, r = retrieval_scores(pred, pool, target, "model", s, n_boot, seed)
        flat.update(f)
        rec_rows += r
        flat.update(diversity_scores(pred, es.features, s))
        bar.update(1, done=f"encoded and scored {s:g} s of speech")

    mean_face = training_mean_feature(layout, es.encoder)
    baseline = np.broadcast_to(mean_face, es.features.shape)
    f, r = similarity_scores(baseline, es.features, "mean_face", None)
    flat.update(f)
    sim_rows += r
    f, r = retrieval_scores(baseline, pool, target, "mean_face", None, n_boot, seed)
    flat.update(f)
    rec_rows += r
    bar.update(1, done="scored the mean-face baseline")

    cranio_rows: list[dict[str, object]] = []
    figs = {"recall_at_k": figures.recall_curves(frame(rec_rows, RECALL_SCHEMA))}
    decoder: LoadedModel | None = None
    if decoder_uri is not None:
        decoder = load_registered_model(decoder_uri, device)
        rng = np.random.default_rng(seed)
        subset = np.sort(rng.permutation(len(es))[:max_reconstructions])
        rec_true = decode_features(decoder, es.features[subset])
        rec_voice = decode_features(decoder, preds[PRIMARY_SECONDS][subset])
        f, cranio_rows = reconstruction_scores(rec_true.landmarks, rec_voice.landmarks,
                                               rec_true.images, rec_voice.images)
        flat.update(f)
        pos = {int(j): i for i, j in enumerate(subset)}
        rows = [i for i in _grid_rows(es, grid_size) if i in pos]
        crops = face_crops(layout, [es.clip_keys[i] for i in rows])
        figs["face_grid"] = figures.face_grid(
            [f"{es.identities[i]}" for i in rows], [crops.get(es.clip_keys[i]) for i in rows],
            rec_true.images[[pos[i] for i in rows]], rec_voice.images[[pos[i] for i in rows]])
        bar.update(1, done=f"decoded and measured {len(subset)} faces with {decoder.ref.label()}")

    voice_rows: list[dict[str, object]] = []
    if identities_path is not None:
        params = _identity_params(identities_path, names)
        pred_by_id = np.stack([preds[PRIMARY_SECONDS][target == i].mean(axis=0)
                               for i in range(len(names))])
        f, voice_rows = voice_parameter_scores(pred_by_id, pool, params.drop("identity"))
        flat.update(f)
    cranio = frame(cranio_rows, CRANIO_SCHEMA)
    voice = frame(voice_rows, VOICE_SCHEMA)
    figs["correlations"] = figures.correlation_table(cranio, voice)
    bar.update(1, done="voice-parameter correlations")
    bar.close()

    result = EvaluationResult(
        evaluation_id=new_evaluation_id(), created_at=datetime.now(UTC), model=encoder.ref,
        decoder=decoder.ref if decoder else None, face_encoder=es.encoder,
        test_snapshot_id=es.snapshot_id, features_hash=es.features_hash,
        identity_source=es.identity_source, n_clips=len(es), n_identities=len(names),
        scores=Scores(flat, frame(sim_rows, SIMILARITY_SCHEMA), frame(rec_rows, RECALL_SCHEMA),
                      cranio, voice),
        figures=figs)
    if record:
        result.mlflow_run_id = log_to_mlflow(result, layout.mlflow_artifacts)
        write_evaluation_row(layout, result)
    return result


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
