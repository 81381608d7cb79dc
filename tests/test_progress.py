"""s2f.progress: log lines every ~10 % without a terminal, a bar and no log lines on one,
nothing when quiet."""

from __future__ import annotations

import io
import logging

import pytest

from s2f import progress
from s2f.progress import Progress


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == progress.LOGGER_NAME]


@pytest.fixture(autouse=True)
def _not_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(progress.QUIET_ENV, raising=False)


def test_without_a_terminal_logs_every_tenth(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=progress.LOGGER_NAME)
    with Progress(200, "train", "step", stream=io.StringIO(), every_seconds=1e9) as bar:
        for i in range(200):
            bar.update(1, loss=1.0 / (i + 1))
    lines = _lines(caplog)
    # a start line, one at each of 10 %..90 %, and the final line
    assert lines[0] == "train: 0/200 step, started"
    assert len(lines) == 11, lines
    for k, line in enumerate(lines[1:10], start=1):
        assert line.startswith(f"train: {20 * k}/200 step ({10 * k} %)"), line
        assert "loss=" in line and "ETA" in line
    assert lines[-1].startswith("train: 200/200 step (100 %)") and "took" in lines[-1]


def test_time_based_lines_between_tenths(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=progress.LOGGER_NAME)
    with Progress(1000, "slow", stream=io.StringIO(), every_seconds=0.0) as bar:
        for _ in range(5):
            bar.update(1)
    # every_seconds=0: each update logs, although 5/1000 is far from 10 %
    assert len(_lines(caplog)) == 1 + 5 + 1


def test_terminal_draws_a_bar_and_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=progress.LOGGER_NAME)
    tty = FakeTTY()
    with Progress(50, "corpus", "identity", stream=tty) as bar:
        for _ in range(50):
            bar.update(1, voices=3)
    assert _lines(caplog) == []
    drawn = tty.getvalue()
    assert "corpus" in drawn and "50/50" in drawn and "voices=3" in drawn


@pytest.mark.parametrize("tty", [False, True])
def test_quiet_silences_both(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
                             tty: bool) -> None:
    caplog.set_level(logging.INFO, logger=progress.LOGGER_NAME)
    progress.set_quiet(True)
    stream = FakeTTY() if tty else io.StringIO()
    with Progress(10, "quiet", stream=stream) as bar:
        for _ in range(10):
            bar.update(1)
    assert _lines(caplog) == [] and stream.getvalue() == ""
    monkeypatch.setenv(progress.QUIET_ENV, "0")
    assert not progress.is_quiet()
