"""Test data and models for the evaluation, promotion, predict and model-card tests.

`make_eval_data` writes a real data directory (clips + FLAC audio, face_features, faces,
identities.parquet): each identity speaks a pure tone at its own STFT bin, and its face feature
is a random vector whose first component encodes the tone's pitch. The voice encoders below
follow the real encoder's contract (spectrogram B×2×T×257 → B×D, `cfg.seconds`) with quality
we control: `ToneEncoder` reads the tone's bin and looks the identity's feature up (healthy, or
`noise` > 0 for a worse one); `ConstantEncoder` returns one vector for every voice (collapsed).
The face decoder is the project's real `FaceDecoder` (small), its landmark head randomised so
the landmarks depend on the feature.
"""

from __future__ import annotations

import atexit
import io
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import torch
from mlflow import MlflowClient
from PIL import Image
from torch import nn

from s2f.media.mux import write_media
from s2f.models.face_decoder import FaceDecoder
from s2f.registry.weights import Architecture, register_architecture
from storage.io import rows_to_table, write_table_atomic
from storage.layout import DataLayout, clip_key
from storage.schemas import CLIPS, FACES, face_features_schema

DIM = 128
BIN_HZ = 16000 / 512
ENCODER_NAME = "speech2face-voice-encoder"
DECODER_NAME = "speech2face-face-decoder"


@dataclass
class EvalData:
    layout: DataLayout
    bins: np.ndarray            # STFT bin of each identity's tone
    base: np.ndarray            # identity × DIM true feature (before per-clip noise)
    test_ids: list[int]
    train_ids: list[int]
    dev_ids: list[int]


_TEMPLATE_DB: list[Path] = []


def use_tracking(tmp_path: Path) -> str:
    """A fresh MLflow SQLite store for one test, copied from a template made once per session
    (creating the schema takes seconds on a busy machine)."""
    if not _TEMPLATE_DB or not _TEMPLATE_DB[0].exists():
        folder = Path(tempfile.mkdtemp(prefix="s2f-mlflow-template-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        template = folder / "mlflow.db"
        mlflow.set_tracking_uri(f"sqlite:///{template}")
        MlflowClient().search_experiments()  # creates the schema
        _TEMPLATE_DB[:] = [template]
    db = (tmp_path / "mlflow.db").resolve()
    shutil.copyfile(_TEMPLATE_DB[0], db)
    uri = f"sqlite:///{db}"
    mlflow.set_tracking_uri(uri)
    # Artifacts inside the test's directory: the store's default is ./mlruns of the cwd.
    mlflow.create_experiment("test-models", artifact_location=(tmp_path / "artifacts").resolve().as_uri())
    return uri


def _video_ids(n_test: int, n_dev: int, n_train: int) -> list[str]:
    """Video ids in identity order test, dev, train: dev ids are those `select_role` puts in
    dev (the train split's ids that hash below the dev fraction), train ids the others."""
    from s2f.train.data import is_dev

    ids = [f"vid{i:08d}" for i in range(n_test)]
    dev = [f"dev{j:08d}" for j in range(100_000) if is_dev(f"dev{j:08d}", 0.1)][:n_dev]
    train = [f"trn{j:08d}" for j in range(100_000) if not is_dev(f"trn{j:08d}", 0.1)][:n_train]
    return ids + dev + train


def make_eval_data(root: Path, n_test: int = 14, n_train: int = 6, clips: int = 2,
                   seconds: float = 1.5, seed: int = 0, n_dev: int = 12) -> EvalData:
    """Identities 0..n_test-1 are test, the next n_dev dev (train split, validation's share),
    the rest train."""
    rng = np.random.default_rng(seed)
    layout = DataLayout(root).ensure()
    n = n_test + n_dev + n_train
    video_ids = _video_ids(n_test, n_dev, n_train)
    bins = 20 + 6 * np.arange(n)
    base = rng.normal(size=(n, DIM)).astype(np.float32)
    base[:, 0] = (bins - bins.mean()) / bins.std() * 3.0  # the feature carries the pitch
    clip_rows, feat_rows, face_rows, ident_rows = [], [], [], []
    t = np.arange(int(seconds * 16000)) / 16000
    for i in range(n):
        split = "test" if i < n_test else "train"
        yid = video_ids[i]
        # The corpus's layout (s2f.corpus.table): one row per identity, a list of its videos.
        ident_rows.append({"identity_id": f"id{i:03d}", "youtube_ids": [yid],
                           "pitch_hz": float(bins[i] * BIN_HZ), "index": i})
        for c in range(clips):
            key = clip_key(yid, 10.0 * c, 10.0 * c + seconds)
            wave = 0.5 * np.sin(2 * np.pi * bins[i] * BIN_HZ * t) + 0.01 * rng.normal(size=t.size)
            audio = layout.audio_path(yid, key)
            write_media(audio, None, audio=wave.astype(np.float32), video_codec=None,
                        audio_codec="flac")
            clip_rows.append({"clip_key": key, "manifest": "m", "split": split, "line_no": 1,
                              "youtube_id": yid, "start_s": 10.0 * c, "end_s": 10.0 * c + seconds,
                              "status": "ok", "audio_path": layout.relative(audio)})
            feat = base[i] + 0.3 * rng.normal(size=DIM).astype(np.float32)
            feat_rows.append({"clip_key": key, "encoder": "dlib-resnet", "feature": feat.tolist(),
                              "l2_norm": float(np.linalg.norm(feat))})
            if c == 0:
                buf = io.BytesIO()
                Image.fromarray(np.full((32, 32, 3), 40 * (i % 6), np.uint8)).save(buf, "JPEG")
                face_rows.append({"clip_key": key, "frame_time_s": 10.0 * c,
                                  "crop_jpeg": buf.getvalue()})
    clip_rows.append({"clip_key": None, "manifest": "m", "split": "test", "line_no": 99,
                      "status": "invalid_row", "error": "bad line"})
    write_table_atomic(rows_to_table(clip_rows, CLIPS), layout.shard_path("clips", "m", 0))
    write_table_atomic(rows_to_table(feat_rows, face_features_schema(DIM)),
                       layout.shard_path("face_features", "m", 0))
    write_table_atomic(rows_to_table(face_rows, FACES), layout.shard_path("faces", "m", 0))
    layout.demo_corpus_dir.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(ident_rows).write_parquet(layout.demo_corpus_dir / "identities.parquet")
    return EvalData(layout, bins, base, list(range(n_test)), list(range(n_test + n_dev, n)),
                    list(range(n_test, n_test + n_dev)))


class _Cfg:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class ToneEncoder(nn.Module):
    """Spectrogram → the feature stored for its loudest STFT bin (zero for unknown bins)."""

    def __init__(self, table: torch.Tensor, seconds: float = 3.0) -> None:
        super().__init__()
        self.cfg = _Cfg(seconds)
        self.table = nn.Parameter(table.clone())  # 257 × D

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        power = (spec[:, 0] ** 2 + spec[:, 1] ** 2).mean(dim=1)  # B × F
        return self.table[power.argmax(dim=-1)]


class ConstantEncoder(nn.Module):
    """A collapsed encoder: one feature for every voice."""

    def __init__(self, value: torch.Tensor, seconds: float = 3.0) -> None:
        super().__init__()
        self.cfg = _Cfg(seconds)
        self.value = nn.Parameter(value.clone())

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return self.value.expand(spec.shape[0], -1) + 0.0 * spec.mean()


def tone_encoder(data: EvalData, noise: float = 0.0, seed: int = 1) -> ToneEncoder:
    rng = np.random.default_rng(seed)
    table = np.zeros((257, DIM), np.float32)
    for i, b in enumerate(data.bins):
        # The compressed spectrum's peak may sit one bin off the tone's: cover its neighbours.
        table[b - 1:b + 2] = data.base[i] * (1 - noise) + noise * 2 * rng.normal(size=DIM)
    return ToneEncoder(torch.from_numpy(table))


def face_decoder(seed: int = 0) -> nn.Module:
    from s2f.models.face_decoder import FaceDecoder, FaceDecoderConfig

    torch.manual_seed(seed)
    dec = FaceDecoder(FaceDecoderConfig.small(in_dim=DIM))
    nn.init.normal_(dec.landmark_mlp[-1].weight, std=0.02)
    return dec.eval()


# The stand-in encoders are allowed architectures of the pickle-free loader (s2f.registry.weights), as
# the real ones are: saved as safetensors + JSON config, built back from this module's classes.
register_architecture("test-tone-encoder", Architecture(
    ToneEncoder, lambda m: {"shape": list(m.table.shape), "seconds": m.cfg.seconds},
    lambda c: ToneEncoder(torch.zeros(c["shape"]), c["seconds"])))
register_architecture("test-constant-encoder", Architecture(
    ConstantEncoder, lambda m: {"shape": list(m.value.shape), "seconds": m.cfg.seconds},
    lambda c: ConstantEncoder(torch.zeros(c["shape"]), c["seconds"])))


def register(module: nn.Module, name: str, alias: str | None = None,
             params: dict[str, str] | None = None) -> str:
    """Log `module` in a run the way training does (pickle-free, `log_torch_model`) and
    register it."""
    from s2f.train.tracking import log_torch_model

    # set_experiment each time: MLflow caches the active experiment id across tracking URIs.
    mlflow.set_experiment("test-models")
    with mlflow.start_run() as run:
        mlflow.log_params(params or {"encoder": "dlib-resnet"})
        example = (np.zeros((2, DIM), np.float32) if isinstance(module, FaceDecoder)
                   else np.zeros((2, 2, 298, 257), np.float32))
        info = log_torch_model(module, "model", example, None)
    mv = mlflow.register_model(info.model_uri, name)
    if alias:
        MlflowClient().set_registered_model_alias(name, alias, mv.version)
    del run
    return str(mv.version)


def tracked_eval_data(tmp_path: Path, decoder_alias: str | None = None, **kwargs: int) -> EvalData:
    """A fresh MLflow store for the test (`use_tracking`) and `make_eval_data(tmp_path/data,
    **kwargs)`; with `decoder_alias`, the face decoder is registered under that alias."""
    use_tracking(tmp_path)
    data = make_eval_data(tmp_path / "data", **kwargs)
    if decoder_alias:
        register(face_decoder(), DECODER_NAME, decoder_alias)
    return data


def register_models(data: EvalData, alias: str, noise: float = 0.0,
                    params: dict[str, str] | None = None) -> None:
    """A tone encoder (`noise` as in `tone_encoder`) and the face decoder, both under `alias`."""
    register(tone_encoder(data, noise=noise), ENCODER_NAME, alias, params=params)
    register(face_decoder(), DECODER_NAME, alias)
