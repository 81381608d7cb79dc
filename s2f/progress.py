"""Progress of a long step, for a person at a terminal and for a run log alike.

`Progress(total, desc, unit)` is used as a context manager around a loop; `update(n, **fields)`
advances it and sets the latest figures (loss, best so far, ...) shown beside the count.

- stderr is a terminal: a tqdm bar on stderr (count, rate, ETA and the fields); nothing is
  logged, so a terminal is not also spammed with log lines.
- otherwise (a Prefect worker, CI, `| tee`): no bar; a plain line through the `logging` logger
  `s2f.progress` each time another ~10 % is done (`every_fraction`) or `every_seconds` have
  passed, and at the end. `flows.runtime.configure` lists the `s2f` loggers in
  PREFECT_LOGGING_EXTRA_LOGGERS, so inside a flow run these lines reach the Prefect UI's run log.
- quiet (`set_quiet(True)`, `s2f --quiet`, or S2F_QUIET=1 in the environment): nothing at all.

    python -m s2f.progress 50        # a 50-step demo (try it with `2>&1 | cat` for the log form)
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import IO, Any

LOGGER_NAME = "s2f.progress"
QUIET_ENV = "S2F_QUIET"

log = logging.getLogger(LOGGER_NAME)
if log.level == logging.NOTSET:
    # The root logger's default (WARNING) would drop every progress line.
    log.setLevel(logging.INFO)


def set_quiet(quiet: bool = True) -> None:
    """Turn every progress report of this process (and its children) off or on."""
    os.environ[QUIET_ENV] = "1" if quiet else "0"


def is_quiet() -> bool:
    return os.environ.get(QUIET_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _is_tty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams (pytest's capture)
        return False


def format_duration(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Progress:
    """A counted long step: a bar on a terminal, ~10 % log lines elsewhere, or nothing."""

    def __init__(self, total: int, desc: str, unit: str = "it", *,
                 every_fraction: float = 0.1, every_seconds: float = 60.0,
                 stream: IO[str] | None = None, initial: int = 0) -> None:
        self.total = max(0, int(total))
        self.desc = desc
        self.unit = unit
        self.n = int(initial)
        self.fields: dict[str, Any] = {}
        self.every_fraction = every_fraction
        self.every_seconds = every_seconds
        self.stream = stream if stream is not None else sys.stderr
        self.mode = "off" if is_quiet() else ("bar" if _is_tty(self.stream) else "log")
        self._start = time.monotonic()
        self._initial = self.n
        self._last_log_time = self._start
        self._next_log_n = self._next_threshold(self.n)
        self._bar: Any = None
        self._closed = False
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=unit, file=self.stream,
                             initial=self.n, dynamic_ncols=True)
        elif self.mode == "log":
            if not log.hasHandlers():
                # Outside Prefect and without logging set up: still say something on stderr.
                handler = logging.StreamHandler(self.stream)
                handler.setFormatter(logging.Formatter("%(message)s"))
                log.addHandler(handler)
            log.info("%s: %d/%d %s, started", desc, self.n, self.total, unit)

    def _next_threshold(self, n: int) -> int:
        step = max(1, int(self.total * self.every_fraction)) if self.total else 1
        return (n // step + 1) * step

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_fields(self, **fields: Any) -> None:
        """Update the figures shown beside the count (None removes one)."""
        for k, v in fields.items():
            if v is None:
                self.fields.pop(k, None)
            else:
                self.fields[k] = v
        if self._bar is not None:
            self._bar.set_postfix({k: _format_value(v) for k, v in self.fields.items()},
                                  refresh=False)

    def update(self, n: int = 1, **fields: Any) -> None:
        self.n += n
        if fields:
            self.set_fields(**fields)
        if self.mode == "bar":
            self._bar.update(n)
        elif self.mode == "log":
            now = time.monotonic()
            if self.n >= self._next_log_n or now - self._last_log_time >= self.every_seconds:
                if self.n < self.total:  # the final line comes from close()
                    self._log_line(now)
                self._next_log_n = self._next_threshold(self.n)

    def rate(self, now: float | None = None) -> float:
        elapsed = (now or time.monotonic()) - self._start
        return (self.n - self._initial) / elapsed if elapsed > 0 else 0.0

    def line(self, now: float | None = None) -> str:
        """`desc: n/total unit (p %), k=v, ..., r unit/s, ETA t` (what a log line says)."""
        now = now or time.monotonic()
        pct = f" ({100.0 * self.n / self.total:.0f} %)" if self.total else ""
        parts = [f"{self.desc}: {self.n}/{self.total} {self.unit}{pct}"]
        parts += [f"{k}={_format_value(v)}" for k, v in self.fields.items()]
        rate = self.rate(now)
        if rate > 0:
            parts.append(f"{rate:.3g} {self.unit}/s")
            if self.n < self.total:
                parts.append(f"ETA {format_duration((self.total - self.n) / rate)}")
            else:
                parts.append(f"took {format_duration(now - self._start)}")
        return ", ".join(parts)

    def _log_line(self, now: float) -> None:
        self._last_log_time = now
        log.info("%s", self.line(now))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "log":
            self._log_line(time.monotonic())


class TrainProgress:
    """A trainer's progress: step/total, running loss, last validation loss, best so far,
    samples/s and ETA. The loops call `step(loss)` after each step, `validated(val_loss)` after
    each validation and `close()` at the end (a few lines in the hot loop, nothing else)."""

    def __init__(self, desc: str, total_steps: int, start_step: int, batch_size: int, *,
                 enabled: bool = True, window: int = 20, stream: IO[str] | None = None) -> None:
        self.batch_size = batch_size
        self.window = window
        self.recent: list[float] = []
        self.best: float | None = None
        self.bar: Progress | None = (Progress(total_steps, desc, "step", initial=start_step,
                                              stream=stream) if enabled else None)

    def step(self, loss: float) -> None:
        if self.bar is None:
            return
        self.recent = (self.recent + [float(loss)])[-self.window:]
        self.bar.set_fields(loss=sum(self.recent) / len(self.recent),
                            samples_per_s=round(self.bar.rate() * self.batch_size, 2))
        self.bar.update(1)

    def validated(self, val_loss: float | None) -> None:
        if self.bar is None or val_loss is None:
            return
        self.best = val_loss if self.best is None else min(self.best, val_loss)
        self.bar.set_fields(val_loss=float(val_loss), best_val=self.best)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    total = int(args[0]) if args else 50
    with Progress(total, "demo", "step") as bar:
        for i in range(total):
            time.sleep(0.05)
            bar.update(1, loss=1.0 / (i + 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
