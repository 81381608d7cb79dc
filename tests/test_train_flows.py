"""`s2f train-decoder` and `s2f train` through the CLI and the Prefect flows (small preset)."""

from __future__ import annotations

from pathlib import Path

import torch

from s2f.train.synthetic import SyntheticCorpus, build
from storage.layout import DataLayout


def _last(model_dir: Path) -> Path:
    """The last checkpoint of the run folder the model folder's LATEST names (per-run folders)."""
    return model_dir / (model_dir / "LATEST").read_text().strip() / "last.pt"


def test_cli_trains_decoder_then_voice_encoder(data_dir: Path, prefect_server: None,
                                               capsys) -> None:  # noqa: ANN001
    from flows.cli import main

    layout = DataLayout(data_dir).ensure()
    build(layout, SyntheticCorpus(identities=10, clips_per_identity=2, dim=8, seconds=1.0,
                                  shard_size=8))
    assert main(["train-decoder", "--data-dir", str(data_dir), "--steps", "2",
                 "--no-track"]) == 0
    assert _last(data_dir / "checkpoints" / "face_decoder").is_file()
    assert main(["train", "--data-dir", str(data_dir), "--steps", "2", "--no-track"]) == 0
    ck = torch.load(_last(data_dir / "checkpoints" / "voice_encoder"), weights_only=True)
    assert ck["step"] == 2
    assert main(["train", "--data-dir", str(data_dir), "--steps", "3", "--resume",
                 "--no-track"]) == 0
    ck = torch.load(_last(data_dir / "checkpoints" / "voice_encoder"), weights_only=True)
    assert ck["step"] == 3
    out = capsys.readouterr().out
    assert "train_loss" in out and "checkpoint" in out
