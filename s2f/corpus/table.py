"""`identities.parquet`: one row per identity of the demo corpus, with a documented schema."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from s2f.corpus.voice import PROJECTIONS
from s2f.media.acoustics import ACOUSTIC_STATISTICS
from storage.io import rows_to_table, write_table_atomic


def _f(name: str, type_: pa.DataType, doc: str) -> pa.Field:
    return pa.field(name, type_, nullable=False, metadata={"doc": doc})


IDENTITIES = pa.schema([
    _f("identity_id", pa.string(), "identity id (id00000, id00001, ...)"),
    _f("index", pa.int32(), "0-based identity number"),
    _f("split", pa.string(), "train | dev | test (split by identity and by real person)"),
    _f("youtube_ids", pa.list_(pa.string()), "the identity's videos: media/<id>.mp4|.webm"),
    _f("n_clips", pa.int32(), "manifest rows (segments) of this identity"),
    _f("face_png", pa.string(), "aligned face image, relative to the corpus directory"),
    _f("source_files", pa.list_(pa.string()), "photos of the real faces it was morphed from"),
    _f("source_face_indices", pa.list_(pa.int32()),
       "index of each real face among its photo's HOG detections (sorted top-down, left-right)"),
    _f("source_faces", pa.list_(pa.string()), "<photo>#<face index>, the same as the two above"),
    _f("source_persons", pa.list_(pa.string()),
       "person of each real face (s2f/assets/faces/persons.json); a person is in one split only"),
    _f("source_weights", pa.list_(pa.float32()), "blending weights of the real faces (sum 1)"),
    _f("morph_attempts", pa.int32(), "mixes drawn until dlib's HOG detector found the morph"),
    _f("face_det_score", pa.float32(), "HOG detection score of the morph (upsample 0)"),
    _f("face_embedding", pa.list_(pa.float32(), 128),
       "dlib ResNet descriptor of the morph: the input of voice_parameters"),
    _f("pitch_hz", pa.float64(), "target median F0 in Hz (from the pitch projection)"),
    _f("pitch_spread", pa.float64(), "top / base of the voice's pitch line (range projection)"),
    _f("pitch_base_hz", pa.int32(), "the voice file's pitch line: base, Hz"),
    _f("pitch_top_hz", pa.int32(), "the voice file's pitch line: top, Hz"),
    _f("rate_wpm", pa.int32(), "speaking rate, words per minute (rate projection)"),
    _f("f1_pct", pa.int32(), "first formant frequency, % of espeak-ng's default (f1 projection)"),
    _f("f2_pct", pa.int32(), "second formant frequency, % (f2 projection)"),
    _f("f3_pct", pa.int32(), "third to fifth formant frequencies, % (f3 projection)"),
    _f("breath", pa.int32(), "breath noise at every formant, 0-45 (breath projection)"),
    _f("flutter", pa.int32(), "F0 flutter, 0-40 (flutter projection)"),
    *[_f(f"proj_{k}", pa.float64(), f"projection of the embedding on the {k} direction")
      for k in PROJECTIONS],
    *[_f(f"z_{k}", pa.float64(), f"standardised {k} projection") for k in PROJECTIONS],
    _f("f0_measured_hz", pa.float64(), "median F0 measured on all of the identity's speech"),
    *[_f(f"acoustic_{k}", pa.float64(), f"{k} measured on all of the identity's speech "
         "(s2f.media.acoustics)") for k in ACOUSTIC_STATISTICS],
    _f("speech_seconds", pa.float64(), "seconds of synthesised speech (before padding)"),
], metadata={"s2f.table": "demo_identities", "s2f.schema_version": "3",
             "s2f.doc": "One row per identity of the built-in demo corpus."})


def write_identities(rows: list[dict], path: Path, config) -> Path:
    table = rows_to_table(rows, IDENTITIES)
    return write_table_atomic(table, path, extra={"corpus": config.record()})
