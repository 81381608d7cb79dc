"""MLflow tracking of training runs: params, metrics, figures, registered models with aliases.

Experiment "speech2face". `MLFLOW_TRACKING_URI` is respected; `flows.runtime.configure` sets it
to the data directory's SQLite store (an absolute URI) when unset. Models are logged without
pickle and without code (`log_torch_model`): a pyfunc whose `loader_module` is the installed
`s2f.registry.pyfunc_weights` and whose data are the weights in safetensors and a JSON config
(`s2f.registry.weights`), with the files' digest in the tracking store (`s2f.registry.store`),
with a signature from a batch-of-2 example, registered under `speech2face-voice-encoder` / `speech2face-face-decoder`;
the new version gets the alias `challenger` (aliases, not the deprecated stages). A model card
goes with every version.

`NullTracker` is the explicit "tracking off" choice (`track=False` in the config).

    python -m s2f.train.tracking       # lists the registered models and their aliases
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s2f.registry.names import CHALLENGER, use_experiment
from storage.io import read_extra, shard_paths
from storage.layout import DataLayout

EXPERIMENT = "speech2face"

MODEL_CARD = """# {name}

Part of a reproduction of Speech2Face (Oh et al., CVPR 2019). {what}

- Intended use: research on what voice and face share; reproducing the paper's figures.
- It cannot infer a person's identity, and a face predicted from a voice is not that
  person's face: it captures correlated attributes (age, gender, some craniofacial features)
  coarsely, with the biases of its training data.
- Demographic caveat: trained on {data}; performance differs across languages, accents, ages
  and ethnicities, and across the groups under-represented there.
- Never use it to identify, verify, profile or surveil anyone.

Config: `{config}`
"""


def model_card(name: str, what: str, config: str) -> str:
    """The card registered with a trained model (`MODEL_CARD` filled in): `name` is
    "voice encoder" or "face decoder", `what` one sentence on what it maps."""
    return MODEL_CARD.format(name=f"Speech2Face {name}", what=what,
                             data="the corpus recorded in the run's input_fingerprint param",
                             config=config)


def input_fingerprint(layout: DataLayout, tables: tuple[str, ...] = ("clips", "face_features")
                     ) -> str:
    """Hash of the input shards' metadata: relative path, size and the writer's `extra`."""
    h = hashlib.sha256()
    for table in tables:
        for p in shard_paths(layout, table):
            extra = read_extra(p) or {}
            h.update(f"{layout.relative(p)}|{p.stat().st_size}|"
                     f"{json.dumps(extra, sort_keys=True)}\n".encode())
    return h.hexdigest()[:16]


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=cwd or Path(__file__).resolve().parents[2], timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def pinned_requirements() -> list[str]:
    """The model's runtime packages at their installed versions (explicit: inferring them
    imports and probes every package for many seconds). The module class itself comes from
    this project (`s2f.models`), which must be importable where the model is loaded."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("torch", "kornia", "numpy", "safetensors"):
        try:
            out.append(f"{pkg}=={version(pkg).split('+')[0]}")
        except PackageNotFoundError:
            out.append(pkg)
    return out


def log_torch_model(model: torch.nn.Module, name: str, example: np.ndarray,
                    registered_name: str | None) -> Any:
    """Log `model` in the active MLflow run as a pickle-free, code-free pyfunc (loader module
    `s2f.registry.pyfunc_weights`, data weights.safetensors + config.json: `s2f.registry.weights`),
    its files' digest recorded in the tracking store, and register it under `registered_name`
    if given; returns MLflow's ModelInfo."""
    import tempfile

    from mlflow.models import infer_signature

    from s2f.registry.pyfunc_weights import LOADER_MODULE
    from s2f.registry.store import MODEL_DATA, log_model_data
    from s2f.registry.weights import save_model_dir

    model = model.cpu().eval()
    with torch.no_grad():
        out = model(torch.from_numpy(example))
    if isinstance(out, tuple):  # the face decoder: the pyfunc returns the image
        out = out[2] if out[2] is not None else out[0]
    signature = infer_signature(example, out.numpy())
    # a spectrogram batch: any number of STFT frames, not the example's; a wave batch (the
    # ge2e front-end takes the wave): any number of samples
    takes_waves = bool(getattr(model, "takes_waves", False))
    if example.ndim == 4 or takes_waves:
        from mlflow.models import ModelSignature
        from mlflow.types.schema import Schema, TensorSpec

        shape = (-1, -1) if takes_waves else (-1, 2, -1, example.shape[3])
        signature = ModelSignature(Schema([TensorSpec(example.dtype, shape)]), signature.outputs)
    with tempfile.TemporaryDirectory(prefix="s2f-model-") as tmp:
        save_model_dir(model, Path(tmp) / MODEL_DATA)
        # no input example: MLflow would load the model to check it before its digest is recorded
        return log_model_data(Path(tmp) / MODEL_DATA, name, LOADER_MODULE, signature=signature,
                              pip_requirements=pinned_requirements(),
                              registered_name=registered_name)


class NullTracker:
    """Tracking off: every call does nothing, explicitly."""

    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_figure(self, fig: Any, path: str) -> None: ...
    def log_text(self, text: str, path: str) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_model(self, model: torch.nn.Module, name: str, example: np.ndarray,
                  registered_name: str | None, card: str) -> str | None:
        return None
    def finish(self, status: str = "FINISHED") -> None: ...


class MlflowTracker(NullTracker):
    """One MLflow run in the `speech2face` experiment."""

    def __init__(self, run_name: str | None = None, experiment: str = EXPERIMENT,
                 tracking_uri: str | None = None, artifact_location: Path | None = None) -> None:
        import mlflow

        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        self.mlflow = mlflow
        use_experiment(experiment, artifact_location)
        self.run = mlflow.start_run(run_name=run_name)
        self.run_id = self.run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        self.mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_figure(self, fig: Any, path: str) -> None:
        import matplotlib.pyplot as plt

        self.mlflow.log_figure(fig, path)
        plt.close(fig)

    def log_text(self, text: str, path: str) -> None:
        self.mlflow.log_text(text, path)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.mlflow.set_tags(tags)

    def log_model(self, model: torch.nn.Module, name: str, example: np.ndarray,
                  registered_name: str | None, card: str) -> str | None:
        """Log (and register, with alias `challenger`) a model; returns the version or None."""
        from mlflow.tracking import MlflowClient

        info = log_torch_model(model, name, example, registered_name)
        self.mlflow.log_text(card, f"{name}_MODEL_CARD.md")
        if registered_name is None:
            return None
        version = str(info.registered_model_version)
        client = MlflowClient()
        client.update_model_version(registered_name, version, description=card)
        client.set_registered_model_alias(registered_name, CHALLENGER, version)
        client.set_model_version_tag(registered_name, version, "run_id", self.run_id or "")
        return version

    def finish(self, status: str = "FINISHED") -> None:
        self.mlflow.end_run(status=status)


def make_tracker(track: bool, run_name: str | None, layout: DataLayout | None = None
                 ) -> NullTracker:
    """MLflow (the env's MLFLOW_TRACKING_URI, else the data dir's SQLite) or explicitly none."""
    if not track:
        return NullTracker()
    import mlflow

    uri = None
    if layout is not None and not os.environ.get("MLFLOW_TRACKING_URI"):
        layout.mlflow_dir.mkdir(parents=True, exist_ok=True)
        uri = layout.mlflow_tracking_uri
    current = uri or mlflow.get_tracking_uri()
    artifacts = layout.mlflow_artifacts if layout is not None and current.startswith("sqlite") \
        else None
    return MlflowTracker(run_name=run_name, tracking_uri=uri, artifact_location=artifacts)


def loss_figure(history: dict[str, list[tuple[int, float]]], title: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, points in history.items():
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    if ax.get_lines():
        ax.legend()
    fig.tight_layout()
    return fig


def image_grid(rows: dict[str, torch.Tensor], title: str) -> Any:
    """One row per entry (name → B×3×H×W in [0, 1])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(t.shape[0] for t in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(1.6 * n, 1.7 * len(rows)), squeeze=False)
    for r, (name, imgs) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r][c]
            ax.axis("off")
            if c < imgs.shape[0]:
                ax.imshow(imgs[c].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy())
        axes[r][0].set_title(name, fontsize=8, loc="left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    from mlflow.tracking import MlflowClient

    for rm in MlflowClient().search_registered_models():
        print(rm.name, rm.aliases)
