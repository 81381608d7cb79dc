"""Batch FLAC decoding with NVIDIA DALI (`fn.decoders.audio`), an alternative to PyAV.

Encoded bytes go in through `fn.external_source`; DALI decodes (CPU operator: DALI has no GPU
audio decoder), resamples to 16 kHz and downmixes to mono, with `num_threads` worker threads.
The samples come back one by one (clips differ in length), are repeated/cut to the fixed length
on the host, and the spectrogram is then computed on the training device as with PyAV. A
pipeline that raised is not reused (DALI marks it invalid): a new one is built.

`TrainConfig.audio_loader = "dali"` selects it; "auto" uses it when CUDA is present (where the
host decode is worth overlapping) and PyAV otherwise.

    python -m s2f.media.dali_audio A.flac [B.flac ...]    # prints each decoded length
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from s2f.media.audio import fix_length


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


class DaliAudioLoader:
    """Decode a batch of audio files to float32 16 kHz mono with a CPU DALI pipeline."""

    def __init__(self, batch_size: int, sample_rate: int = 16000, num_threads: int = 2) -> None:
        self.batch_size, self.sample_rate, self.num_threads = batch_size, sample_rate, num_threads
        self._pipe: Any = None

    def _build(self) -> Any:
        from nvidia.dali import fn, pipeline_def, types

        @pipeline_def(batch_size=self.batch_size, num_threads=self.num_threads, device_id=None,
                      prefetch_queue_depth=1, exec_async=False, exec_pipelined=False)
        def pipe() -> Any:
            enc = fn.external_source(name="enc", dtype=types.UINT8, ndim=1)
            audio, _ = fn.decoders.audio(enc, sample_rate=self.sample_rate, downmix=True,
                                         dtype=types.FLOAT)
            return audio

        p = pipe()
        p.build()
        return p

    def load(self, paths: Sequence[str | Path]) -> list[np.ndarray]:
        return self.load_encoded([Path(p).read_bytes() for p in paths])

    def load_encoded(self, blobs: Sequence[bytes]) -> list[np.ndarray]:
        """Decode encoded files' bytes (a pack's members, `s2f.media.packs.AudioReader`)."""
        if not blobs:
            return []
        if len(blobs) > self.batch_size:
            raise ValueError(f"{len(blobs)} files for a pipeline of batch {self.batch_size}")
        if self._pipe is None:
            self._pipe = self._build()
        try:
            self._pipe.feed_input("enc", [np.frombuffer(bytearray(b), np.uint8) for b in blobs])
            (out,) = self._pipe.run()
        except Exception:
            self._pipe = None  # DALI invalidates a pipeline after an error
            raise
        return [np.asarray(out.at(i), dtype=np.float32).reshape(-1) for i in range(len(out))]

    def load_fixed(self, paths: Sequence[str | Path], num_samples: int) -> np.ndarray:
        return np.stack([fix_length(w, num_samples) for w in self.load(paths)])


if __name__ == "__main__":
    for p, w in zip(sys.argv[1:], DaliAudioLoader(max(1, len(sys.argv) - 1)).load(sys.argv[1:]),
                    strict=True):
        print(p, w.shape, float(np.abs(w).max()))
