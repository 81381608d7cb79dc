"""Model files that load without executing code: tensors in safetensors, the rest in JSON.

A saved model is two files in one directory:

- `weights.safetensors`: the module's `state_dict` (safetensors holds raw tensors only, so
  reading it cannot run code, unlike a pickle);
- `config.json`: `{"format": FORMAT, "architecture": NAME, "config": {...}, "sha256": ...}`:
  which locally installed class to build (an allow-list, `ARCHITECTURES`), its constructor
  config, and the weights file's SHA-256.

`load_model_dir` builds the module from this project's own code and fills in the tensors; it
refuses (`UnsafeModelError`) anything else: a directory without these files (for example an
`mlflow.pytorch` pickle), an unknown architecture, a format it does not know, weights whose
hash differs from the config's, or a weights file that is not safetensors. It is the one place
where registered models are turned into modules (`s2f.registry.inference.load_registered_model`, the
serving pyfunc, the pyfunc each registered model carries).

    python -m s2f.registry.weights DIR        # prints the architecture and config of a saved model
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from storage.io import file_sha256

FORMAT = "s2f-safetensors-1"
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"


class UnsafeModelError(ValueError):
    """A model directory that is not in our pickle-free format (or was altered): not loaded."""


@dataclass(frozen=True)
class Architecture:
    """How to describe a module as JSON and build it back from that JSON."""

    cls: type[nn.Module]
    config_of: Callable[[nn.Module], dict[str, Any]]
    build: Callable[[dict[str, Any]], nn.Module]


def _voice_encoder() -> Architecture:
    from s2f.models.voice_encoder import VoiceEncoder, VoiceEncoderConfig

    def build(cfg: dict[str, Any]) -> nn.Module:
        cfg = dict(cfg)
        cfg["channels"] = tuple(cfg["channels"])  # JSON has lists; the frozen config a tuple
        return VoiceEncoder(VoiceEncoderConfig(**cfg))

    return Architecture(VoiceEncoder, lambda m: m.cfg.to_dict(), build)  # type: ignore[operator]


def _ge2e_voice_encoder() -> Architecture:
    from s2f.models.ge2e import Ge2eConfig, Ge2eVoiceEncoder

    # pretrained=False: the speaker encoder's tensors are in the model's own safetensors
    return Architecture(Ge2eVoiceEncoder, lambda m: m.cfg.to_dict(),  # type: ignore[operator]
                        lambda cfg: Ge2eVoiceEncoder(Ge2eConfig.from_dict(cfg), pretrained=False))


def _face_decoder() -> Architecture:
    from s2f.models.face_decoder import FaceDecoder, FaceDecoderConfig

    return Architecture(FaceDecoder, lambda m: m.cfg.to_dict(),  # type: ignore[operator]
                        lambda cfg: FaceDecoder(FaceDecoderConfig(**cfg)))


# The allow-list: a saved model names one of these; nothing else is ever built.
ARCHITECTURES: dict[str, Callable[[], Architecture]] = {
    "voice_encoder": _voice_encoder,
    "ge2e_voice_encoder": _ge2e_voice_encoder,
    "face_decoder": _face_decoder,
}


def register_architecture(name: str, arch: Architecture) -> None:
    """Allow another locally defined module class (tests register their stand-in models)."""
    ARCHITECTURES[name] = lambda: arch


def architecture_name(module: nn.Module) -> str:
    for name, make in ARCHITECTURES.items():
        if type(module) is make().cls:
            return name
    raise TypeError(f"{type(module).__name__} is not a known architecture "
                    f"({', '.join(ARCHITECTURES)}); register it with register_architecture")


def save_model_dir(module: nn.Module, directory: Path) -> dict[str, Path]:
    """Write `module` as weights.safetensors + config.json into `directory`; returns both paths
    keyed "weights" and "config" (the names the MLflow model's artifacts get)."""
    from safetensors.torch import save_file

    from storage.io import atomic_path

    name = architecture_name(module)
    config = ARCHITECTURES[name]().config_of(module)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    # contiguous CPU copies: safetensors refuses views and shared storage
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT, "architecture": name})
    meta = {"format": FORMAT, "architecture": name, "config": config,
            "sha256": file_sha256(weights)}
    cfg_path = directory / CONFIG_FILE
    with atomic_path(cfg_path) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return {"weights": weights, "config": cfg_path}


def find_model_files(directory: Path) -> tuple[Path, Path]:
    """(weights, config) in a saved directory or in an MLflow model directory (`data/model/`,
    where `s2f.registry.store` logs them; `artifacts/` in models logged before it)."""
    directory = Path(directory)
    for d in (directory, directory / "data" / "model", directory / "artifacts"):
        if (d / CONFIG_FILE).is_file() and (d / WEIGHTS_FILE).is_file():
            return d / WEIGHTS_FILE, d / CONFIG_FILE
    found = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())
    raise UnsafeModelError(
        f"{directory}: no {WEIGHTS_FILE} + {CONFIG_FILE} (found: {', '.join(found[:8]) or 'none'}); "
        "only models saved by s2f.registry.weights are loaded, never pickled ones")


# A module may own a little more than its saved tensors (non-persistent buffers); a config that
# makes it own more than this beyond them is refused before anything is allocated.
MAX_UNSAVED_BYTES = 64 << 20
_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                       torch.float64: "F64", torch.int64: "I64", torch.int32: "I32",
                       torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}


def _header(weights: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Tensor name -> (shape, dtype) from the safetensors header alone (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype())
                    for k in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)
    except (SafetensorError, OSError) as exc:
        raise UnsafeModelError(f"{weights}: not a safetensors file ({exc})") from exc


def _build_checked(name: str, cfg: dict[str, Any], weights: Path, config: Path) -> nn.Module:
    """Build `name` from `cfg` on the `meta` device (no memory), check every tensor's name, shape
    and dtype against the weights' header and the module's total size, and only then build it
    for real: a config naming a huge width is refused, not allocated."""
    build = ARCHITECTURES[name]().build
    try:
        with torch.device("meta"):
            shell = build(cfg)
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise UnsafeModelError(f"{config}: not a valid {name} config ({exc})") from exc
    header = _header(weights)
    want = {k: (tuple(v.shape), _SAFETENSORS_DTYPES.get(v.dtype, str(v.dtype)))
            for k, v in shell.state_dict().items()}
    if want != header:
        diff = sorted(k for k in set(want) | set(header) if want.get(k) != header.get(k))
        shown = "; ".join(f"{k}: config {want.get(k)} vs weights {header.get(k)}" for k in diff[:3])
        raise UnsafeModelError(f"{config}: the config does not match the weights' header "
                               f"({len(diff)} tensors differ: {shown}); not built")
    saved = sum(v.numel() * v.element_size() for v in shell.state_dict().values())
    total = sum(t.numel() * t.element_size()
                for t in (*shell.parameters(), *shell.buffers()))
    if total > saved + MAX_UNSAVED_BYTES:
        raise UnsafeModelError(f"{config}: the config builds {total} bytes of tensors for "
                               f"{saved} saved; not built")
    return build(cfg)


def load_model_files(weights: Path, config: Path, device: str | torch.device = "cpu"
                     ) -> tuple[nn.Module, dict[str, Any]]:
    """Build the module named by `config` and load `weights` into it (eval mode, `device`).
    Returns the module and the config's JSON."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        meta = json.loads(Path(config).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsafeModelError(f"{config}: not a JSON model config ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UnsafeModelError(f"{config}: format is not {FORMAT!r}")
    name = meta.get("architecture")
    if name not in ARCHITECTURES:
        raise UnsafeModelError(f"{config}: unknown architecture {name!r} "
                               f"(allowed: {', '.join(ARCHITECTURES)})")
    digest = file_sha256(Path(weights))
    if digest != meta.get("sha256"):
        raise UnsafeModelError(f"{weights}: SHA-256 {digest[:12]}… differs from the config's "
                               f"{str(meta.get('sha256'))[:12]}…: the weights were altered")
    module = _build_checked(name, dict(meta.get("config") or {}), Path(weights), Path(config))
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise UnsafeModelError(f"{weights}: not a safetensors file ({exc})") from exc
    try:
        module.load_state_dict(state, strict=True)
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise UnsafeModelError(f"{config}: weights do not fit {name} ({exc})") from exc
    return module.to(device).eval(), meta


def load_model_dir(directory: Path, device: str | torch.device = "cpu"
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """`load_model_files` on the two files in `directory` (or its `artifacts/`)."""
    return load_model_files(*find_model_files(directory), device=device)


if __name__ == "__main__":
    mod, info = load_model_dir(Path(sys.argv[1]))
    print(info["architecture"], json.dumps(info["config"]))
