"""Registered models in, face features and reconstructions out: the shared inference path of
evaluation, promotion and `s2f predict`.

A model is named by an MLflow URI (`models:/speech2face-voice-encoder@champion`,
`models:/name/3`, `models:/m-<id>`). `load_registered_model` resolves it to its registry name
and version (so every output can say which model made it), loads the torch module from its
safetensors weights and JSON config (`s2f.registry.weights`: no pickle, the class comes from this
project, a pickled or altered model is refused) and reads the training run's params,
which say which face encoder the features imitate and which audio settings (window,
compression) the encoder was trained with.

Call contract of the modules (see `s2f.models`): the voice encoder maps a spectrogram
B×2×T×257 (or, with `takes_waves`, the ge2e front-end: the 16 kHz wave B×N) to features B×D and
has `cfg.seconds`; the face decoder maps features B×D to
(texture, landmarks B×68×2, image B×3×S×S).

    python -m s2f.registry.inference models:/speech2face-voice-encoder@champion   # verifies, prints what it resolves to
    python -m s2f.registry.inference --copy DIR models:/speech2face-pyfunc/1      # a verified copy to serve
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s2f.media.audio import AudioConfig, fix_length, spectrogram
from s2f.registry.names import FACE_DECODER_NAME, VOICE_ENCODER_NAME, model_uri  # noqa: F401 (re-export)
from s2f.registry.weights import UnsafeModelError  # noqa: F401 (re-export)

DEFAULT_FACE_ENCODER = "dlib-resnet"


class ModelResolutionError(LookupError):
    """The URI names no registered model version (unknown name, alias or version)."""


@dataclass(frozen=True)
class ModelRef:
    """Which model: the URI asked for and the registry name/version it resolved to."""

    uri: str
    name: str | None
    version: str | None
    run_id: str | None

    def label(self) -> str:
        return f"{self.name} v{self.version}" if self.name else self.uri


@dataclass
class LoadedModel:
    ref: ModelRef
    module: torch.nn.Module
    params: dict[str, str] = field(default_factory=dict)

    @property
    def face_encoder(self) -> str:
        return self.params.get("encoder", DEFAULT_FACE_ENCODER)

    def audio_config(self, seconds: float | None = None) -> AudioConfig:
        """The STFT settings the encoder was trained with, at `seconds` (default: its own)."""
        cfg = AudioConfig()
        over: dict[str, Any] = {}
        for key in ("window", "compression"):
            if key in self.params:
                over[key] = self.params[key]
        own = getattr(getattr(self.module, "cfg", None), "seconds", None)
        over["seconds"] = float(seconds if seconds is not None else own or cfg.seconds)
        return replace(cfg, **over)


def resolve_model_uri(uri: str) -> ModelRef:
    """`models:/name@alias` or `models:/name/version` → name, version and source run."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    if not uri.startswith("models:/"):
        return ModelRef(uri, None, None, None)
    rest = uri[len("models:/"):]
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        elif "/" in rest:
            name, version = rest.split("/", 1)
            mv = client.get_model_version(name, version)
        else:  # a logged model (models:/m-<id>) outside the registry
            return ModelRef(uri, None, None, None)
    except MlflowException as exc:
        raise ModelResolutionError(f"{uri}: no such registered model version ({exc.message})") from exc
    return ModelRef(uri, mv.name, str(mv.version), mv.run_id)


def _run_params(run_id: str | None) -> dict[str, str]:
    if not run_id:
        return {}
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return dict(MlflowClient().get_run(run_id).data.params)
    except MlflowException:
        return {}  # the run was deleted; the module itself still carries its config


def load_registered_model(uri: str, device: str | torch.device = "cpu") -> LoadedModel:
    """Resolve and load a torch model from MLflow, in eval mode on `device`, without pickle and
    without running stored code: the downloaded model directory must hash to the digest the
    tracking store recorded (`s2f.registry.store`), then only its weights.safetensors and
    config.json are read (`s2f.registry.weights`). A model in any other form (an `mlflow.pytorch`
    pickle, altered files or MLmodel, no recorded digest) raises UnsafeModelError."""
    import tempfile

    from s2f.registry.weights import load_model_dir

    with tempfile.TemporaryDirectory(prefix="s2f-load-") as tmp:
        local, ref = download_verified(uri, Path(tmp))
        module, _ = load_model_dir(local, device)
    return LoadedModel(ref, module, _run_params(ref.run_id))


def download_verified(uri: str, dst: Path) -> tuple[Path, ModelRef]:
    """Resolve `uri`, download that exact version (not the alias: it may move while we run)
    into `dst` and check its files against the digest in the tracking store; returns the local
    model directory and what the URI resolved to. UnsafeModelError when they differ."""
    from s2f.registry.store import recorded_digest, verified_download

    ref = resolve_model_uri(uri)
    model_id = uri[len("models:/"):] if uri.startswith("models:/m-") else None
    expected = recorded_digest(ref.name, ref.version, model_id)
    load_uri = f"models:/{ref.name}/{ref.version}" if ref.name else uri
    return verified_download(load_uri, expected, ref.label(), Path(dst)), ref


@torch.no_grad()
def encode_waves(encoder: LoadedModel, waves: list[np.ndarray], seconds: float | None = None,
                 batch_size: int = 8) -> np.ndarray:
    """16 kHz mono waveforms of any length → predicted face features N×D (float32).
    Each wave is repeated/cut to `seconds` first, as in training."""
    cfg = encoder.audio_config(seconds)
    device = next(encoder.module.parameters(), torch.empty(0)).device
    out: list[np.ndarray] = []
    for i in range(0, len(waves), batch_size):
        batch = torch.from_numpy(np.stack([fix_length(w, cfg.num_samples)
                                           for w in waves[i:i + batch_size]])).to(device)
        # the ge2e front-end takes the wave itself (`takes_waves`), the paper's CNN the STFT
        x = batch if getattr(encoder.module, "takes_waves", False) else spectrogram(batch, cfg)
        out.append(encoder.module(x).float().cpu().numpy())
    if not out:
        raise ValueError("no waveforms to encode")
    return np.concatenate(out)


@dataclass
class Reconstruction:
    landmarks: np.ndarray   # N×68×2, the decoder's normalised [-1, 1] frame
    images: np.ndarray      # N×H×W×3 uint8


@torch.no_grad()
def decode_features(decoder: LoadedModel, features: np.ndarray, batch_size: int = 16
                    ) -> Reconstruction:
    """Face features → the decoder's landmarks and warped face images."""
    device = next(decoder.module.parameters(), torch.empty(0)).device
    lms: list[np.ndarray] = []
    imgs: list[np.ndarray] = []
    for i in range(0, len(features), batch_size):
        x = torch.as_tensor(np.asarray(features[i:i + batch_size], np.float32), device=device)
        _, landmarks, image = decoder.module(x)
        if image is None:
            raise ValueError(f"{decoder.ref.label()} returned no image")
        lms.append(landmarks.float().cpu().numpy())
        pix = (image.float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1)
        imgs.append(pix.cpu().numpy())
    if not lms:
        raise ValueError("no features to decode")
    return Reconstruction(np.concatenate(lms), np.concatenate(imgs))


def load_pyfunc_verified(uri: str, dst: Path) -> Any:
    """`mlflow.pyfunc.load_model` on a copy in `dst` that was checked against the tracking
    store's digest first: MLflow follows whatever `MLmodel` says (its `loader_module`, a `code`
    path), so an altered one must be refused before MLflow reads it."""
    import mlflow.pyfunc

    local, _ = download_verified(uri, Path(dst))
    return mlflow.pyfunc.load_model(str(local))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--copy"]:  # --copy DIR URI: a verified copy, for `mlflow models serve -m DIR`
        local, ref = download_verified(args[2], Path(args[1]))
        print(ref.label(), local)
        return 0
    for uri in args:
        m = load_registered_model(uri)
        print(m.ref, m.face_encoder, m.audio_config())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
