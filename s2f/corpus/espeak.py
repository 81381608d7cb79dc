"""In-process espeak-ng speech synthesis through the `espeakng_loader` wheel (ctypes).

No system espeak is used: the wheel ships `libespeak-ng.so` and its data directory.

espeak-ng keeps synthesis state in C statics that neither `espeak_Terminate` nor
`espeak_Initialize` resets (the pitch-flutter phase, the automatic gain, the echo buffer), so the
samples of an utterance depend on everything the library spoke before it in the same process. To
make speech a function of (text, voice, parameters, seed) only, every `EspeakSession` loads a
fresh instance of the library: a private copy of the shared object (see `_private_library`) is
`dlopen`ed at the start of the session and `dlclose`d at its end, which drops all of its state.
A session costs about 5 ms. Within a session, utterances are deterministic given their order.

    with EspeakSession() as tts:
        tts.set_voice("en+m3", rate=160, pitch=40, pitch_range=50)
        wave = tts.synth("Hello there.", seed=7)   # int16 samples at tts.sample_rate (22050 Hz)
        tts.set_voice_file(voice_file_text, rate=160)   # a voice defined by a voice file's text

A voice file is loaded by path (`espeak_SetVoiceByFile`), which espeak-ng copies into a
60-byte buffer: the file goes to a short content-addressed path under the temp directory
(`voice_file_path`), written once, atomically, so concurrent builders share it.
"""

from __future__ import annotations

import _ctypes
import ctypes
import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: synchronous, samples handed to the callback
ESPEAK_INITIALIZE_DONT_EXIT = 0x8000
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1
ESPEAK_ENDPAUSE = 0x1000
# espeak_PARAMETER
ESPEAK_RATE, ESPEAK_VOLUME, ESPEAK_PITCH, ESPEAK_RANGE, ESPEAK_WORDGAP = 1, 2, 3, 4, 7

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.c_void_p)
_LOCK = threading.Lock()  # one session at a time per process: the library is not reentrant
_PRIVATE_COPY: list[Path] = []
VOICE_PATH_MAX = 59  # espeak_ng_SetVoiceByFile copies the path into char[60]


class EspeakError(RuntimeError):
    pass


def _private_library() -> Path:
    """A copy of libespeak-ng under its own file name, shared by all processes (one per library
    build, in the temp directory, never deleted): dlopen maps it apart from any other user of
    the wheel's library in this process, so that dlclose really drops its state."""
    if not _PRIVATE_COPY:
        import espeakng_loader

        src = Path(espeakng_loader.get_library_path()).resolve()
        digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
        dst = Path(tempfile.gettempdir()) / f"s2f-espeak-{digest}" / "libespeak-ng-s2f.so"
        if not dst.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.{os.getpid()}")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)  # atomic: concurrent processes agree on one complete file
        _PRIVATE_COPY.append(dst)
    return _PRIVATE_COPY[0]


def voice_file_path(text: str) -> Path:
    """A file holding the voice file `text`, at a path espeak-ng can take (≤ VOICE_PATH_MAX
    bytes): `<temp>/s2fv/<sha1 prefix>`, or under /tmp when the temp directory's name is long."""
    name = hashlib.sha1(text.encode()).hexdigest()[:16]
    for root in (Path(tempfile.gettempdir()), Path("/tmp")):
        path = root / "s2fv" / name
        if len(str(path).encode()) <= VOICE_PATH_MAX:
            break
    else:
        raise EspeakError(f"no temp directory with a path short enough for espeak-ng's "
                          f"{VOICE_PATH_MAX + 1}-byte voice-file buffer: set TMPDIR to one")
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


def _bind(lib: ctypes.CDLL) -> None:
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetVoiceByFile.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByFile.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_Terminate.restype = ctypes.c_int
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = None


class EspeakSession:
    """A fresh espeak-ng instance (synchronous, retrieval mode) for the duration of a `with`."""

    def __init__(self) -> None:
        self.lib: ctypes.CDLL | None = None
        self.sample_rate = 0
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # referenced while espeak holds the pointer

    def _collect(self, wav, numsamples, events) -> int:  # noqa: ARG002 - espeak's signature
        if numsamples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        return 0  # 0: go on synthesising

    def __enter__(self) -> EspeakSession:
        import espeakng_loader

        _LOCK.acquire()
        try:
            try:
                lib = ctypes.CDLL(str(_private_library()))
            except OSError:  # e.g. a noexec temp directory: the wheel's own file will do,
                # as long as nothing else in this process holds it open
                lib = ctypes.CDLL(espeakng_loader.get_library_path())
            _bind(lib)
            rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                         espeakng_loader.get_data_path().encode(),
                                         ESPEAK_INITIALIZE_DONT_EXIT)
            if rate <= 0:
                _ctypes.dlclose(lib._handle)
                raise EspeakError(f"espeak_Initialize failed ({rate})")
            lib.espeak_SetSynthCallback(self._callback)
        except BaseException:
            _LOCK.release()
            raise
        self.lib, self.sample_rate = lib, int(rate)
        return self

    def __exit__(self, *exc) -> None:
        lib, self.lib = self.lib, None
        try:
            if lib is not None:
                lib.espeak_Terminate()
                _ctypes.dlclose(lib._handle)
        finally:
            _LOCK.release()

    def set_voice(self, voice: str = "en", rate: int = 175, pitch: int = 50,
                  pitch_range: int = 50, volume: int = 100) -> None:
        """Voice name (language[+variant], e.g. `en+m3`) and espeak parameters: rate in words
        per minute (80-450), pitch and pitch range 0-100 (50 is the voice's own)."""
        lib = self._require()
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EspeakError(f"espeak-ng has no voice {voice!r}")
        self._set_parameters(rate, pitch, pitch_range, volume)

    def set_voice_file(self, text: str, rate: int = 175, volume: int = 100) -> None:
        """The voice a voice file's `text` defines (espeak-ng's voice file format: `language`,
        `pitch`, `formant`, `breath`, `flutter`, ... lines); pitch and range parameters at 50,
        the file's own."""
        lib = self._require()
        path = voice_file_path(text)
        if lib.espeak_SetVoiceByFile(str(path).encode()) != 0:
            raise EspeakError(f"espeak-ng did not load the voice file {path}")
        self._set_parameters(rate, 50, 50, volume)

    def _set_parameters(self, rate: int, pitch: int, pitch_range: int, volume: int) -> None:
        lib = self._require()
        for param, value in ((ESPEAK_RATE, rate), (ESPEAK_PITCH, pitch),
                             (ESPEAK_RANGE, pitch_range), (ESPEAK_VOLUME, volume),
                             (ESPEAK_WORDGAP, 0)):
            if lib.espeak_SetParameter(param, int(value), 0) != 0:
                raise EspeakError(f"espeak_SetParameter({param}, {value}) failed")

    def synth(self, text: str, seed: int = 0) -> np.ndarray:
        """Speak `text` with the current voice; int16 mono samples at `self.sample_rate`."""
        lib = self._require()
        lib.espeak_ng_SetRandSeed(int(seed) & 0x7FFFFFFF)  # breath/noise generator
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        err = lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0,
                               ESPEAK_CHARS_UTF8 | ESPEAK_ENDPAUSE, None, None)
        if err != 0:
            raise EspeakError(f"espeak_Synth failed ({err})")
        lib.espeak_Synchronize()
        chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)

    def _require(self) -> ctypes.CDLL:
        if self.lib is None:
            raise EspeakError("use EspeakSession inside a `with` block")
        return self.lib


def espeak_version() -> str:
    """The espeak-ng library's version string (e.g. "1.52.0")."""
    with EspeakSession() as tts:
        lib = tts._require()
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        return (lib.espeak_Info(None) or b"?").decode()
