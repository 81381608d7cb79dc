"""The model store holds data, never code: how registered models are logged and checked.

A registered model is an MLflow pyfunc whose `loader_module` is a module of this installed
package (`s2f.registry.pyfunc_weights` for one torch model, `s2f.registry.pyfunc_model` for the
served voice -> face pair) and whose `data/` holds only safetensors weights and JSON. No Python
file is stored with it, so `mlflow.pyfunc.load_model`, `mlflow models serve` and `s2f predict`
import only code that is installed here.

What the artifact store holds can still be altered by whoever can write to it, so the digest of
every file of the model directory (`model_files_digest`: relative path, size and SHA-256 of
each file, `MLmodel` included) is recorded in the *tracking store*, apart from the artifacts:
as the tag `DIGEST_TAG` of the logged model and of its registered version. `verified_download`
downloads a model and refuses it (`UnsafeModelError`) unless its files hash to that tag: an
altered `MLmodel` (another `loader_module`, a `code` path), an added file or changed weights
are all refused before anything in them is read.

Used by `s2f.registry.inference.load_registered_model` (which resolves the URI and checks) and
by the two loader modules; `python -m s2f.registry.inference URI` verifies and prints a model.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from s2f.registry.weights import UnsafeModelError
from storage.io import file_sha256

DIGEST_TAG = "s2f.model_files_sha256"
MODEL_DATA = "model"  # the data_path's folder name: <model>/data/model/
# Written by MLflow's client into every download of `models:/name/version` (name and version,
# overwritten on each download), so never what the store holds.
_DOWNLOAD_SIDE_FILES = frozenset({"registered_model_meta"})


def model_files_digest(root: Path) -> str:
    """SHA-256 over every file under `root` (sorted relative path, size, SHA-256 of the file).
    Links and other non-files are refused: a model directory holds plain files only. MLflow's
    download-side `registered_model_meta` is left out."""
    root = Path(root)
    h = hashlib.sha256()
    for p in sorted(root.rglob("*"), key=lambda q: q.relative_to(root).as_posix()):
        rel = p.relative_to(root).as_posix()
        if rel in _DOWNLOAD_SIDE_FILES:
            continue
        if p.is_symlink() or not (p.is_file() or p.is_dir()):
            raise UnsafeModelError(f"{root}: {rel} is not a plain file")
        if p.is_file():
            h.update(f"{rel}\0{p.stat().st_size}\0{file_sha256(p)}\n".encode())
    return h.hexdigest()


def log_model_data(data_dir: Path, name: str, loader_module: str, *, signature: Any = None,
                   input_example: Any = None, pip_requirements: list[str] | None = None,
                   model_config: dict[str, Any] | None = None,
                   registered_name: str | None = None) -> Any:
    """Log `data_dir` (weights + JSON only) as a pyfunc loaded by the installed `loader_module`,
    record its files' digest as the logged model's tag (and the registered version's, when
    `registered_name` is given). Returns MLflow's ModelInfo (`registered_model_version` set)."""
    import mlflow

    info = mlflow.pyfunc.log_model(
        name=name, loader_module=loader_module, data_path=str(data_dir), signature=signature,
        input_example=input_example, pip_requirements=pip_requirements, model_config=model_config)
    with tempfile.TemporaryDirectory(prefix="s2f-digest-") as tmp:
        # hash what the store holds, as a later download will see it
        local = mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri, dst_path=tmp)
        digest = model_files_digest(Path(local))
    mlflow.set_logged_model_tags(info.model_id, {DIGEST_TAG: digest})
    if registered_name is not None:
        info.registered_model_version = int(register_with_digest(info.model_uri, registered_name,
                                                                 digest))
    return info


def register_with_digest(model_uri: str, registered_name: str, digest: str | None = None) -> str:
    """`mlflow.register_model` (quietly: no "Successfully registered" lines on stderr) and the
    digest as the new version's tag (read from the logged model's tag when not given)."""
    import logging

    import mlflow
    from mlflow import MlflowClient
    from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM

    was = MLFLOW_LOGGING_STREAM.enabled
    MLFLOW_LOGGING_STREAM.enabled = False  # what mlflow.utils.logging_utils.disable_logging does
    try:
        mv = mlflow.register_model(model_uri, registered_name)
    finally:
        MLFLOW_LOGGING_STREAM.enabled = was
    client = MlflowClient()
    if digest is None and _logged_model_id(mv):
        digest = client.get_logged_model(_logged_model_id(mv)).tags.get(DIGEST_TAG)
    if digest:
        client.set_model_version_tag(registered_name, str(mv.version), DIGEST_TAG, digest)
    logging.getLogger(__name__).info("registered %s version %s (safetensors + JSON, digest %s)",
                                     registered_name, mv.version, (digest or "none")[:12])
    return str(mv.version)


def _logged_model_id(mv: Any) -> str | None:
    """The logged model a registered version was made from (`model_id`, which the SQLite
    store leaves empty, else its `models:/m-<id>` source)."""
    source = str(mv.source or "")
    return mv.model_id or (source[len("models:/"):] if source.startswith("models:/m-") else None)


def recorded_digest(name: str | None, version: str | None, model_id: str | None) -> str:
    """The digest the tracking store recorded for a registered version (its tag, else its
    logged model's); UnsafeModelError when none was recorded (a model logged before digests,
    or one registered by other means: re-register it with `register_with_digest`)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    if name and version:
        tags = client.get_model_version(name, version).tags or {}
        if DIGEST_TAG in tags:
            return str(tags[DIGEST_TAG])
        model_id = model_id or _logged_model_id(client.get_model_version(name, version))
    if model_id:
        try:
            tag = client.get_logged_model(model_id).tags.get(DIGEST_TAG)
        except MlflowException:
            tag = None
        if tag:
            return str(tag)
    label = f"{name} v{version}" if name else model_id
    raise UnsafeModelError(f"{label}: the tracking store records no {DIGEST_TAG} for this model, "
                           "so its files cannot be checked; not loaded (log it with "
                           "s2f.registry.store.log_model_data; models saved any other way, pickled ones "
                           "above all, are never loaded)")


def check_model_dir(root: Path, expected: str, label: str) -> None:
    """Refuse `root` unless its files hash to `expected` (what the tracking store recorded)."""
    digest = model_files_digest(Path(root))
    if digest != expected:
        files = sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*") if p.is_file())
        raise UnsafeModelError(
            f"{label}: the stored files (MLmodel, weights, config) hash to {digest[:12]}…, not the "
            f"{expected[:12]}… recorded in the tracking store: the model was altered in the "
            f"artifact store; not loaded (files: {', '.join(files[:10])})")


def verified_download(load_uri: str, expected: str, label: str, dst: Path) -> Path:
    """Download the model `load_uri` names into `dst` and check its files against `expected`
    (`recorded_digest`); returns the local model directory. Nothing downloaded is read first."""
    import mlflow.artifacts

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=load_uri, dst_path=str(dst)))
    check_model_dir(local, expected, label)
    return local


def check_loaded_dir(data_path: Path) -> None:
    """For the installed loader modules, called by MLflow with `<model>/data/model`: when the
    model's `MLmodel` names a logged model that the current tracking store knows, its files
    must hash to the recorded digest. (A directory the tracking store does not know, such as a
    verified copy made by `verified_download`, is only checked by the weights' own hash.)"""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    root = Path(data_path).parents[1]
    if not (root / "MLmodel").is_file():
        return
    model_id = Model.load(str(root / "MLmodel")).model_id
    if not model_id:
        return
    try:
        tags = MlflowClient().get_logged_model(model_id).tags
    except MlflowException:
        return  # not this tracking store's model
    if DIGEST_TAG not in tags:
        raise UnsafeModelError(f"{model_id}: no {DIGEST_TAG} recorded; not loaded")
    check_model_dir(root, tags[DIGEST_TAG], model_id)
