"""The `s2f` command line is generated from the parameter models in `flows/params.py`: a flag
the user leaves out takes the model's default, switches set their field, and `--help` stays
light (no Prefect, torch or MLflow). No flow runs here: these tests take a second or two."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flows import params as P
from flows.cli import COMMANDS, build_parser, command_params, main


def _params(argv: list[str]):
    parsed = command_params(build_parser().parse_args(argv), "s2f")
    assert parsed is not None
    return parsed[1]


def test_flags_left_out_take_the_models_defaults(tmp_path: Path) -> None:
    manifest = tmp_path / "avspeech_train.csv"
    manifest.write_text("abcdefghijk,0,1,0.5,0.5\n")
    required = {"ingest": ["--manifest", str(manifest), "--media-root", str(tmp_path)],
                "demo-corpus": ["--out", str(tmp_path)],
                "predict": [str(manifest), "--out", str(tmp_path)],
                "real-pairs": ["--pairs", str(tmp_path)]}
    for command in COMMANDS:
        given = required.get(command.name, [])
        params = _params([command.name, *given])
        # The same fields given the same way through the model alone: every other field is
        # the model's default, none is argparse's.
        assert params.model_fields_set <= {"manifests", "media_root", "out", "audio", "pairs"}, command
        assert params == command.model.model_validate(params.model_dump(
            include=params.model_fields_set))
    assert _params(["promote"]).min_diversity == P.PromoteParams().min_diversity == 0.2
    assert _params(["evaluate"]).bootstrap == _params(["pipeline"]).bootstrap == 1000


def test_switches_and_nested_fields() -> None:
    train = _params(["train", "--no-track", "--steps", "3", "--set", "seed=2", "--set", "lr=1e-3"])
    assert (train.track, train.steps, train.overrides) == (False, 3, {"seed": 2, "lr": 0.001})
    assert _params(["evaluate", "--decoder-uri", "models:/x/1", "--no-decoder"]).decoder_uri is None
    assert _params(["promote", "--no-evaluate"]).evaluate_missing is False
    assert _params(["demo", "--no-control"]).shuffled_control is False
    assert _params(["demo"]).shuffled_control is True
    pipeline = _params(["pipeline", "--runner", "dask", "--dask-workers", "3",
                        "--stages", "train", "ingest"])
    assert pipeline.runner == P.RunnerParams(kind="dask", dask_workers=3)
    assert pipeline.stages == ["ingest", "train"]  # always pipeline order


def test_bad_values_exit_2_naming_the_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--set", "no-equals-sign"]) == 2
    assert "--set wants KEY=VALUE" in capsys.readouterr().err
    assert main(["demo", "--seeds", "0"]) == 2
    assert "seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        main(["pipeline", "--stages", "train-everything"])


def test_help_imports_no_heavy_library() -> None:
    code = ("import sys\nfrom flows.cli import main\n"
            "for c in ([], ['demo'], ['train'], ['pipeline']):\n"
            "    try:\n        main([*c, '--help'])\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('prefect', 'torch', 'mlflow') if m in sys.modules),"
            " file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parents[1])
    assert done.stderr.strip().splitlines()[-1] == "[]"
