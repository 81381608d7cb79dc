"""The written schema of every table the pipeline hands between stages.

Each field carries its documentation in the field metadata (`doc`), and each table its schema
version in the file metadata, so a Parquet file describes itself. `docs/tables.md` is generated
from these definitions (`python -m storage.schemas > docs/tables.md`); a test keeps it current.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1


def _f(name: str, type_: pa.DataType, doc: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


def _schema(name: str, doc: str, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(fields, metadata={
        "s2f.table": name, "s2f.schema_version": str(SCHEMA_VERSION), "s2f.doc": doc,
    })


# Clip statuses written by ingestion. Later stages write their own status tables.
CLIP_STATUSES = {
    "ok": "media found, streams probed, audio segment written as FLAC (into the shard's pack)",
    "invalid_row": "the manifest line is not a valid AVSpeech row, or a pairs directory's file "
                   "stem or index.html row does not parse (reason in `error`)",
    "duplicate": "same clip key (youtube_id, start, end in ms) as an earlier manifest line of "
                 "the run, or as an earlier stem of a pairs directory (which one in `error`)",
    "split_conflict": "the video (youtube_id) is also in another split's manifest: one speaker "
                      "may be in one split only (both manifest lines, file:line, in `error`)",
    "missing_media": "no <media-root>/<id>.(mp4|webm|mkv) and no download asked for",
    "download_failed": "yt-dlp could not fetch the video after retries",
    "corrupt_media": "the file is empty, truncated or not a media container; pairs: audio "
                     "with no samples, NaN/inf samples or silence (which, in `error`)",
    "no_audio": "the container has no audio stream",
    "no_video": "the container has no video stream",
    "video_too_large": "the video's frames exceed the pixel limit (s2f.ingest.media "
                       "MAX_VIDEO_SIDE / MAX_VIDEO_PIXELS; size in `error`): decoding them "
                       "would hold gigabytes per clip",
    "out_of_range": "the segment lies (partly) past the end of the media",
    "decode_failed": "the audio segment could not be decoded",
    "error": "an unexpected error while reading the media (message in `error`)",
    "face_only": "a pairs directory's face image with no audio (`retrieve/`): a retrieval "
                 "distractor, never trained on or scored as a voice",
    "missing_face": "a pairs directory's stem has audio (`Wav/`) but no true face (`Face_ori/`)",
    "missing_audio": "a pairs directory's true face (`Face_ori/`) has no audio (`Wav/`) in a "
                     "folder of pairs (avspeech_res, voxceleb)",
}

CLIPS = _schema("clips", "One row per manifest line (or per file stem of a pairs directory, "
                "s2f.ingest.pairs): validation, media probe and the cut audio.", [
    _f("clip_key", pa.string(), "youtube_id + start/end in ms (VoxCeleb pairs: `vox_` + the "
       "stem without its 4 figure digits); null for lines that do not parse"),
    _f("manifest", pa.string(), "manifest name (CSV file stem; `pairs_<folder>` for a pairs "
       "directory's folder)", nullable=False),
    _f("split", pa.string(), "train | dev | test: the manifest name's last word or `s2f ingest "
       "--split`; pairs: by person, seeded (s2f.ingest.pairs.assign_splits)", nullable=False),
    _f("line_no", pa.int64(), "1-based line number in the manifest; pairs: 1-based position of "
       "the stem in the folder's sorted listing", nullable=False),
    _f("youtube_id", pa.string(), "11-character YouTube id"),
    _f("start_s", pa.float64(), "segment start in seconds (VoxCeleb pairs: 0)"),
    _f("end_s", pa.float64(), "segment end in seconds (VoxCeleb pairs: the audio's duration)"),
    _f("hint_x", pa.float32(), "face centre x, normalised to [0, 1]"),
    _f("hint_y", pa.float32(), "face centre y, normalised to [0, 1]"),
    _f("status", pa.string(), "one of CLIP_STATUSES", nullable=False),
    _f("error", pa.string(), "why the clip stopped here; null when ok"),
    _f("media_path", pa.string(), "absolute path of the source media file"),
    _f("video_path", pa.string(), "source video (same as media_path): referenced, never copied"),
    _f("audio_path", pa.string(), "where the segment's 16 kHz mono FLAC is, relative to the "
       "data directory: `audio/packs/<manifest>/shard-<NNNNN>-<token>.tar#<offset>:<size>:"
       "<crc32>` (a member of a clips shard's pack: its bytes' offset, size and CRC-32, "
       "storage.layout.PACK_KEY_TEMPLATE; a row copied by a re-shard keeps naming the pack it "
       "was cut into) or, ingested before packs, `audio/<id>/<clip_key>.flac`; "
       "s2f.media.packs reads both"),
    _f("video_codec", pa.string(), "codec of the first video stream (h264, vp9, ...)"),
    _f("audio_codec", pa.string(), "codec of the first audio stream (aac, opus, ...)"),
    _f("width", pa.int32(), "video width in pixels"),
    _f("height", pa.int32(), "video height in pixels"),
    _f("fps", pa.float32(), "average video frame rate"),
    _f("media_duration_s", pa.float64(), "duration of the whole media file"),
    _f("audio_samples", pa.int64(), "samples in the FLAC (16 kHz mono)"),
    # Pairs directories (s2f.ingest.pairs) fill these; video ingestion leaves them null.
    _f("person_id", pa.string(), "the person: VoxCeleb the name (`Donald_Glover`), AVSpeech and "
       "retrieve the youtube id; splits, identity pools and controls use it where set"),
    _f("face_image_path", pa.string(), "absolute path of the true face image (`Face_ori/`)"),
    _f("paper_s2f_path", pa.string(), "absolute path of the page's `Face_exg0/` image: the "
       "paper's Speech2Face reconstruction from the speech"),
    _f("paper_f2f_path", pa.string(), "absolute path of the page's `Face_f2f/` image: the "
       "paper's face decoder applied to the true face's feature"),
    _f("gender", pa.string(), "male | female, from the page's index.html (VoxCeleb)"),
    _f("age_band", pa.string(), "age band as the page writes it (`<20`, `20-39`, `40-59`, "
       "`>=60`), `Age: ` stripped"),
    _f("ethnicity", pa.string(), "ethnicity as the page writes it (`Non-Hispanic white`, ...)"),
    _f("native_speaker", pa.bool_(), "native English speaker, from the page's `Native` / "
       "`Non-native`"),
    # Added with issue 24, last like every added column (old shards read them as nulls).
    _f("media_size_bytes", pa.int64(), "size of the media file when it was probed; preprocess "
       "gives the clip `media_changed` if it differs (null: ingested before the column)"),
    _f("media_mtime_ns", pa.int64(), "modification time (ns) of the media file when it was "
       "probed; compared like `media_size_bytes`"),
    # Added with issue 26: a re-sharded ingest reuses a row whose inputs are unchanged.
    _f("clip_fingerprint", pa.string(), "SHA-256 of the row's inputs (line, media state): "
       "null where no media was needed"),
])

PREPROCESS_STATUSES = {
    "ok": "face crop, landmarks and face features written",
    "no_face": "no face found in any sampled frame",
    "decode_failed": "the video frames could not be decoded",
    "media_changed": "the media file's size or mtime differs from what ingest recorded (or it "
                     "is gone): its audio was cut from another file; re-run `s2f ingest`",
    "audio_failed": "the FLAC segment could not be read",
    "error": "an unexpected error (message in `error`)",
}

PREPROCESS = _schema("preprocess", "One row per ok clip: what preprocessing made of it.", [
    _f("clip_key", pa.string(), "key of the clip", nullable=False),
    _f("status", pa.string(), "one of PREPROCESS_STATUSES", nullable=False),
    _f("error", pa.string(), "why the clip stopped here; null when ok"),
    _f("video_decoder", pa.string(), "dali-gpu | dali-cpu | pyav: which path decoded the frames"),
    _f("frames_sampled", pa.int32(), "frames decoded from the segment"),
    _f("faces_found", pa.int32(), "frames with a detected face"),
    # Added with issue 26: a re-sharded preprocess reuses a clip whose inputs are unchanged.
    _f("clip_fingerprint", pa.string(), "SHA-256 of the clip's `clips` row and the parameters"),
])

FACES = _schema("faces", "One row per sampled frame with a detected face.", [
    _f("clip_key", pa.string(), "key of the clip", nullable=False),
    _f("frame_time_s", pa.float64(), "time of the frame in the source media", nullable=False),
    _f("bbox", pa.list_(pa.float32(), 4), "face box x0, y0, x1, y1 in frame pixels"),
    _f("landmarks", pa.list_(pa.float32(), 136), "68 (x, y) iBUG points in frame pixels"),
    _f("det_score", pa.float32(), "detector score (HOG margin or MMOD confidence)"),
    _f("crop_jpeg", pa.binary(), "aligned 224x224 RGB face crop, JPEG"),
])


def face_features_schema(dim: int) -> pa.Schema:
    return _schema("face_features", "One row per clip and face encoder.", [
        _f("clip_key", pa.string(), "key of the clip", nullable=False),
        _f("encoder", pa.string(), "face encoder name in the registry", nullable=False),
        _f("feature", pa.list_(pa.float32(), dim), "face feature of the clip's representative face"),
        _f("l2_norm", pa.float32(), "L2 norm of `feature`"),
    ])


EVALUATIONS = _schema(
    "evaluations", "One row per evaluation of a voice encoder (+ face decoder) on the dev or the "
    "test split (s2f.evaluation); directory per registered model name. The promotion gate reads "
    "dev rows only; a model version's test row is written once and read back after.", [
        _f("evaluation_id", pa.string(), "unique id of the evaluation", nullable=False),
        _f("created_at", pa.timestamp("us", tz="UTC"), "when the evaluation finished"),
        _f("model_name", pa.string(), "registered name of the voice encoder"),
        _f("model_version", pa.string(), "registered version of the voice encoder"),
        _f("model_uri", pa.string(), "URI the evaluation was asked for", nullable=False),
        _f("model_run_id", pa.string(), "MLflow run that produced the voice encoder"),
        _f("decoder_name", pa.string(), "registered name of the face decoder"),
        _f("decoder_version", pa.string(), "registered version of the face decoder"),
        _f("decoder_uri", pa.string(), "URI of the face decoder; null when none was used"),
        _f("face_encoder", pa.string(), "face_features encoder whose features are predicted"),
        _f("role", pa.string(), "dev | test: the split scored (dev: decisions; test: reported "
           "only, scored once per model version)"),
        _f("kind", pa.string(), "model | shuffled_control (trained with the face features "
           "permuted across training identities)"),
        _f("seed", pa.int64(), "training seed of the voice encoder (its run's `seed` param)"),
        _f("split_snapshot_id", pa.string(), "sha256 (16 hex) of the sorted clip keys of the "
           "split scored (dev or test, as `role` says); `test_snapshot_id` in data written "
           "before the rename, renamed on read", nullable=False),
        _f("features_hash", pa.string(), "sha256 (16 hex) of the test features, by clip key"),
        _f("identity_source", pa.string(), "youtube_id, or the identities.parquet used"),
        _f("n_clips", pa.int64(), "test clips evaluated"),
        _f("n_identities", pa.int64(), "identities in the retrieval pool"),
        _f("recall_at_10_6s", pa.float64(), "recall@10 from 6 s input (promotion gate)"),
        _f("cosine_deg_mean_6s", pa.float64(), "mean cosine distance in degrees, 6 s input"),
        _f("diversity_6s", pa.float64(), "spread of predictions / spread of true features"),
        _f("metrics", pa.map_(pa.string(), pa.float64()),
           "every metric by name, CIs included (s2f.evaluation.scores lists them)"),
        _f("mlflow_run_id", pa.string(), "MLflow run holding the figures and tables"),
    ])


TABLES: dict[str, pa.Schema] = {
    "clips": CLIPS,
    "preprocess": PREPROCESS,
    "faces": FACES,
    "face_features": face_features_schema(128),
    "evaluations": EVALUATIONS,
}

# Columns renamed since data was first written: table -> {old name: new name}. Readers
# (`storage.io.read_shard`, `storage.io.scan`) rename them, so an old data directory still reads
# and takes new shards beside its old ones.
RENAMED_COLUMNS: dict[str, dict[str, str]] = {
    "evaluations": {"test_snapshot_id": "split_snapshot_id"},
}

# Nullable columns added to a table since data was first written: table -> names. Readers
# (`storage.io.read_shard`, `storage.io.scan`) give older shards these columns as nulls, so a data
# directory with video clips ingested before them still reads as one table beside new shards.
ADDED_COLUMNS: dict[str, tuple[str, ...]] = {
    "clips": ("person_id", "face_image_path", "paper_s2f_path", "paper_f2f_path", "gender",
              "age_band", "ethnicity", "native_speaker", "media_size_bytes", "media_mtime_ns",
              "clip_fingerprint"),
    "preprocess": ("clip_fingerprint",),
}

# The tables `s2f preprocess` writes per clips shard, under the clips shard's manifest/name.
PREPROCESS_OUTPUT_TABLES = ("preprocess", "faces", "face_features")

STATUS_VOCABULARY: dict[str, dict[str, str]] = {"clips": CLIP_STATUSES, "preprocess": PREPROCESS_STATUSES}


def to_markdown() -> str:
    """docs/tables.md: every table's schema, fields and statuses."""
    from storage.layout import AUDIO_TEMPLATE, PACK_KEY_TEMPLATE, PACK_TEMPLATE, SHARD_TEMPLATE

    out = [
        "# Tables", "",
        "Generated by `python -m storage.schemas > docs/tables.md`; do not edit by hand.", "",
        f"Schema version {SCHEMA_VERSION}. Every table is a directory of Parquet shards: "
        f"`tables/<table>/<manifest>/{SHARD_TEMPLATE}`. Audio: one pack per clips shard, "
        f"`{PACK_TEMPLATE}`, an uncompressed tar of `<clip_key>.flac` members, each clip's "
        f"`audio_path` the key `{PACK_KEY_TEMPLATE}`; data ingested before packs has one "
        f"file per clip, `{AUDIO_TEMPLATE}`, and reads as before. "
        "Writes are atomic (temporary file, then rename); readers are polars lazy scans.", "",
    ]
    for name, schema in TABLES.items():
        meta = schema.metadata or {}
        out += [f"## `{name}`", "", meta.get(b"s2f.doc", b"").decode(), "",
                "| field | type | doc |", "|---|---|---|"]
        for field in schema:
            doc = (field.metadata or {}).get(b"doc", b"").decode()
            type_ = str(field.type) + ("" if field.nullable else " not null")
            out.append(f"| `{field.name}` | {type_} | {doc} |")
        if name in STATUS_VOCABULARY:
            out += ["", "| status | meaning |", "|---|---|"]
            out += [f"| `{k}` | {v} |" for k, v in STATUS_VOCABULARY[name].items()]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(to_markdown())
