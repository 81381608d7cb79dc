"""Registered models load without unpickling anything, and a pickled or altered model is
refused (fails closed), on a real MLflow registry in SQLite."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from eval_helpers import use_tracking
from mlflow import MlflowClient

from s2f.models.face_decoder import FaceDecoder, FaceDecoderConfig
from s2f.models.voice_encoder import VoiceEncoder, VoiceEncoderConfig
from s2f.registry.inference import load_pyfunc_verified, load_registered_model
from s2f.registry.store import DIGEST_TAG, model_files_digest
from s2f.registry.weights import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    UnsafeModelError,
    load_model_dir,
    save_model_dir,
)
from s2f.train.tracking import log_torch_model


class Unpickled(AssertionError):
    pass


def _forbid_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every way to unpickle (pickle, its C and Python unpicklers, torch.load, cloudpickle)
    raises: a load that reaches any of them fails the test."""
    def boom(*a: object, **k: object) -> None:
        raise Unpickled("something unpickled during the load")

    class NoUnpickler:
        def __init__(self, *a: object, **k: object) -> None:
            boom()

    for mod in (pickle, torch.serialization):
        for attr in ("load", "loads", "_load", "_loads"):
            if hasattr(mod, attr):
                monkeypatch.setattr(mod, attr, boom)
    monkeypatch.setattr(pickle, "Unpickler", NoUnpickler)
    monkeypatch.setattr(pickle, "_Unpickler", NoUnpickler)
    monkeypatch.setattr(torch, "load", boom)
    import cloudpickle

    monkeypatch.setattr(cloudpickle, "load", boom)
    monkeypatch.setattr(cloudpickle, "loads", boom)


def _register(module: torch.nn.Module, example: np.ndarray, name: str) -> str:
    mlflow.set_experiment("test-models")  # use_tracking gave it a tmp artifact root
    with mlflow.start_run():
        mlflow.log_params({"encoder": "dlib-resnet"})
        info = log_torch_model(module, "model", example, None)
    mv = mlflow.register_model(info.model_uri, name)
    MlflowClient().set_registered_model_alias(name, "champion", mv.version)
    return str(mv.version)


def _stored_digest(model_id: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        return model_files_digest(Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{model_id}", dst_path=tmp)))


def _model_root(tmp_path: Path) -> Path:
    """The registry's own copy of the one logged model, in the local artifact store."""
    (mlmodel,) = (tmp_path / "artifacts").rglob("MLmodel")
    return mlmodel.parent


def _models() -> tuple[VoiceEncoder, FaceDecoder, np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    enc = VoiceEncoder(VoiceEncoderConfig.small()).eval()
    dec = FaceDecoder(FaceDecoderConfig.small(in_dim=128)).eval()
    spec = np.random.default_rng(0).normal(size=(2, 2, 298, 257)).astype(np.float32)
    feats = np.random.default_rng(1).normal(size=(2, 128)).astype(np.float32)
    return enc, dec, spec, feats


def test_registered_models_load_without_unpickling(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    use_tracking(tmp_path)
    enc, dec, spec, feats = _models()
    _register(enc, spec, "enc")
    _register(dec, feats, "dec")
    with monkeypatch.context() as m:
        _forbid_unpickling(m)
        with pytest.raises(Unpickled):
            pickle.loads(pickle.dumps(1))  # the trap is armed
        loaded_enc = load_registered_model("models:/enc@champion")
        loaded_dec = load_registered_model("models:/dec@champion")
        # MLflow's own pyfunc loader (models-from-code) unpickles nothing either
        pyfunc = mlflow.pyfunc.load_model("models:/enc@champion")
        out = pyfunc.predict(spec)
    assert loaded_enc.ref.name == "enc" and loaded_enc.ref.version == "1"
    with torch.no_grad():
        x = torch.from_numpy(spec)
        # same weights, same module class: identical outputs
        torch.testing.assert_close(loaded_enc.module(x), enc(x), rtol=0, atol=0)
        torch.testing.assert_close(torch.from_numpy(out), enc(x), rtol=0, atol=0)
        f = torch.from_numpy(feats)
        torch.testing.assert_close(loaded_dec.module(f)[2], dec(f)[2], rtol=0, atol=0)
    assert isinstance(loaded_dec.module, FaceDecoder)
    torch.testing.assert_close(loaded_dec.module.mean_shape, dec.mean_shape, rtol=0, atol=0)


def test_a_pickled_model_is_refused_unopened(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A model registered the old way (mlflow.pytorch, pickle) is refused without reading it."""
    import mlflow.pytorch

    use_tracking(tmp_path)
    enc, _, _, _ = _models()
    mlflow.set_experiment("test-models")  # use_tracking gave it a tmp artifact root
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(enc, name="model", serialization_format="pickle",
                                        pip_requirements=["torch"])
    mlflow.register_model(info.model_uri, "old")
    with monkeypatch.context() as m:
        _forbid_unpickling(m)
        # no digest recorded: refused before anything is downloaded
        with pytest.raises(UnsafeModelError, match="records no s2f.model_files_sha256"):
            load_registered_model("models:/old/1")
        # and with its digest recorded (as if logged by us), the pickle itself is refused
        from s2f.registry.store import register_with_digest

        mlflow.set_logged_model_tags(info.model_id, {DIGEST_TAG: _stored_digest(info.model_id)})
        register_with_digest(info.model_uri, "old")
        with pytest.raises(UnsafeModelError, match="never pickled"):
            load_registered_model("models:/old/2")


def test_altered_weights_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_tracking(tmp_path)
    enc, _, spec, _ = _models()
    _register(enc, spec, "enc")
    # the registry's own copy, in the local artifact store under tmp_path (use_tracking)
    (weights,) = (tmp_path / "artifacts").rglob(WEIGHTS_FILE)
    original = weights.read_bytes()
    # a pickle where the safetensors file was (what a tampered registry would hold)
    buf = io.BytesIO()
    torch.save({"fc2.weight": torch.zeros(1)}, buf)
    weights.write_bytes(buf.getvalue())
    with monkeypatch.context() as m:
        _forbid_unpickling(m)
        with pytest.raises(UnsafeModelError, match="altered in the artifact store"):
            load_registered_model("models:/enc/1")
    # changed tensors that keep the file valid safetensors are caught by the hash as well
    weights.write_bytes(original[:-4] + b"\0\0\0\0")
    with pytest.raises(UnsafeModelError, match="altered"):
        load_registered_model("models:/enc/1")
    weights.write_bytes(original)
    assert load_registered_model("models:/enc/1").ref.version == "1"


def test_only_allow_listed_architectures_are_built(tmp_path: Path) -> None:
    enc, _, spec, _ = _models()
    files = save_model_dir(enc, tmp_path / "m")
    module, meta = load_model_dir(tmp_path / "m")
    assert meta["architecture"] == "voice_encoder" and isinstance(module, VoiceEncoder)
    text = files["config"].read_text()
    files["config"].write_text(text.replace('"voice_encoder"', '"os.system"'))
    with pytest.raises(UnsafeModelError, match="unknown architecture 'os.system'"):
        load_model_dir(tmp_path / "m")
    shutil.rmtree(tmp_path / "m")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / CONFIG_FILE).write_text("not json")
    (tmp_path / "m" / WEIGHTS_FILE).write_bytes(b"")
    with pytest.raises(UnsafeModelError, match="not a JSON model config"):
        load_model_dir(tmp_path / "m")


MARKER_CODE = "\nimport pathlib; pathlib.Path({marker!r}).write_text('ran')\n"


def test_no_code_is_stored_and_appended_code_never_runs(tmp_path: Path) -> None:
    """The issue's attack: a line appended to the stored Python file ran on
    `mlflow.pyfunc.load_model`. Now the store holds no Python file at all, MLmodel names the
    installed loader module, and a `.py` planted in the store is never imported."""
    use_tracking(tmp_path)
    enc, _, spec, _ = _models()
    _register(enc, spec, "enc")
    root = _model_root(tmp_path)
    stored = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert not [f for f in stored if f.endswith((".py", ".pkl", ".pt", ".pth"))], stored
    pyfunc_conf = yaml.safe_load((root / "MLmodel").read_text())["flavors"]["python_function"]
    assert pyfunc_conf["loader_module"] == "s2f.registry.pyfunc_weights"
    assert "code" not in pyfunc_conf or pyfunc_conf["code"] is None
    marker = tmp_path / "pwned"
    for py in root.rglob("*.py"):  # none today; the attack of the issue, should one appear
        py.write_text(py.read_text() + MARKER_CODE.format(marker=str(marker)))
    out = mlflow.pyfunc.load_model("models:/enc@champion").predict(spec)
    assert out.shape == (2, enc.cfg.out_dim) and not marker.exists()


def _plant_code(root: Path, marker: Path) -> None:
    """An attacker with write access to the artifact store: their module beside the model,
    and MLmodel pointed at it (MLflow adds `code` to sys.path and imports `loader_module`)."""
    (root / "code").mkdir()
    (root / "code" / "evil_loader.py").write_text(
        MARKER_CODE.format(marker=str(marker)) + "def _load_pyfunc(path):\n    return None\n")
    text = (root / "MLmodel").read_text()
    text = text.replace("loader_module: s2f.registry.pyfunc_weights",
                        "loader_module: evil_loader\n    code: code")
    (root / "MLmodel").write_text(text)


def test_altered_store_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """Planted code + MLmodel, MLmodel alone, and weights + config altered together (so that
    the config's own SHA-256 of the weights still matches: a self-attested hash): every s2f
    path refuses, naming the tracking store's digest, and the planted code never runs."""
    use_tracking(tmp_path)
    enc, _, spec, _ = _models()
    _register(enc, spec, "enc")
    root = _model_root(tmp_path)
    pristine = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    marker = tmp_path / "pwned"

    def refused() -> None:
        with pytest.raises(UnsafeModelError, match="recorded in the tracking store"):
            load_registered_model("models:/enc@champion")
        with pytest.raises(UnsafeModelError, match="recorded in the tracking store"):
            load_pyfunc_verified("models:/enc/1", tmp_path / f"copy-{len(list(tmp_path.iterdir()))}")
        assert not marker.exists()

    _plant_code(root, marker)
    refused()
    shutil.rmtree(root / "code")
    refused()  # MLmodel still names the planted loader
    for p, data in pristine.items():
        p.write_bytes(data)
    # a whole other model in place of ours, its config re-hashed to fit
    torch.manual_seed(5)
    other = VoiceEncoder(VoiceEncoderConfig.small()).eval()
    save_model_dir(other, root / "data" / "model")
    assert load_model_dir(root / "data" / "model")[0] is not None  # self-consistent on its own
    refused()
    # MLflow's own loader (our installed loader module) checks the digest too
    with pytest.raises(UnsafeModelError, match="recorded in the tracking store"):
        mlflow.pyfunc.load_model("models:/enc/1")
    for p, data in pristine.items():
        p.write_bytes(data)
    assert load_registered_model("models:/enc@champion").ref.version == "1"
    assert load_pyfunc_verified("models:/enc/1", tmp_path / "ok").predict(spec).shape[0] == 2


def test_a_config_naming_a_huge_width_is_refused_before_allocating(tmp_path: Path) -> None:
    """The config is checked against the safetensors header on the `meta` device: a width of
    2**20 channels (weights of about 10**13 bytes) is refused, never allocated."""
    enc, _, _, _ = _models()
    files = save_model_dir(enc, tmp_path / "m")
    meta = json.loads(files["config"].read_text())
    meta["config"]["channels"] = [2 ** 20] * len(meta["config"]["channels"])
    files["config"].write_text(json.dumps(meta))
    with pytest.raises(UnsafeModelError, match="does not match the weights' header"):
        load_model_dir(tmp_path / "m")
