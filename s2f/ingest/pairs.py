"""Real voice-face pairs: a directory laid out like the Speech2Face project page -> `clips` rows.

    records = scan_pairs(root)                    # one record per file stem, statuses, no decoding
    assign_splits(records, seed=0)                # train/dev/test by person, in place
    shards = plan_pair_shards(records, 256)       # per folder, in listing order
    for shard in shards:
        ingest_pair_shard(shard, layout)          # decode + check audio, its pack, then the Parquet
    remove_stale_pair_shards(layout, shards)
    # or all of it: ingest_pairs(root, layout, seed=0)

    python -m s2f.ingest.pairs PAIRS_DIR DATA_DIR [SHARD_SIZE]   # counts by folder, split, status

The directory (a clone of the page's repository, `.wav` audio, or the shared copy, `.flac`):

    avspeech_res/  Wav/<stem>.(flac|wav)  Face_ori/ Face_f2f/ Face_exg0/<stem>.jpg  [IDs.txt]
                   stem `<youtube_id>_<start>-<end>`, e.g. `-1nRm4tQL0A_024.760000-029.960000`
    voxceleb/      the same folders + index.html (gender, native speaker, age band, ethnicity)
                   stem `<4 digits><Name>_<youtube_id>_<7 digits>`; the 4 digits are a figure
                   group, the person is the Name
    retrieve/      Face_ori/<stem>.jpg only: true faces with no audio, retrieval distractors

A clone of the page's repository keeps them as figures/avspeech_res, figures/voxceleb and
supplemental/retrieve: `find_folders` looks there too, so the clone works as it is.

The folder listing is the truth (IDs.txt is not read). Each stem found in `Wav/` or `Face_ori/`
becomes one record of manifest `pairs_<folder>`, `line_no` its position in the sorted listing:
`ok` (audio and face), `missing_face` / `missing_audio` (one of the two), `face_only`
(`retrieve/`), `duplicate` (its clip key is an earlier stem's: AVSpeech and retrieve stems get
`storage.layout.clip_key`, the key an AVSpeech CSV row of the segment gets; VoxCeleb stems
`vox_<Name>_<youtube_id>_<7 digits>`), `invalid_row` (a stem not in its folder's form, or a
VoxCeleb stem whose index.html row does not parse; an unparsable row naming no listed stem gets
a record of its own after the listing, clip key null). The page's voice-assistant rows
(`Zz_Alexa`, `Zz_Google`, `Zz_Siri`: a synthetic voice, no human face) are skipped, no record.
`ingest_pair_shard` then decodes each `ok` record's audio (PyAV; any rate and channel count,
resampled to 16 kHz mono) and refuses empty, NaN/inf or silent audio (`corrupt_media`, the
reason says which) or audio that does not decode (`decode_failed`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import av
import numpy as np

from s2f.ingest.manifest import quote
from s2f.ingest.media import SAMPLE_RATE, MediaError, encode_flac
from s2f.ingest.shard import ShardResult, audio_damage, remove_stale_shards
from s2f.media.audio import load_audio
from s2f.media.packs import PackWriter, pack_token
from storage.io import read_extra, rows_to_table, write_table_atomic
from storage.layout import DataLayout, clip_key
from storage.schemas import CLIPS

PAIRS_FOLDERS = ("avspeech_res", "voxceleb", "retrieve")
# What each folder holds, for the message of a directory that has none of them.
FOLDER_CONTENTS = {
    "avspeech_res": "AVSpeech test pairs: Wav/ speech, Face_ori/ true faces, Face_f2f/ and "
                    "Face_exg0/ the paper's reconstructions",
    "voxceleb": "VoxCeleb pairs of named people: the same folders plus index.html (labels)",
    "retrieve": "Face_ori/ only: further true faces, retrieval distractors",
}
DISTRACTOR_FOLDER = "retrieve"
# Where a folder may sit under the root: itself, or as in a clone of the page's repository
# (figures/avspeech_res, figures/voxceleb, supplemental/retrieve).
CLONE_PARENTS = (".", "figures", "supplemental")
# Bump when the records a shard produces would change for the same inputs.
PAIRS_VERSION = 1
TABLE = "clips"
AUDIO_EXTENSIONS = (".flac", ".wav")  # a stem with both: the first one here is read
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
VOICE_ASSISTANTS = ("Zz_Alexa", "Zz_Google", "Zz_Siri")
SPLITS = ("train", "dev", "test")
DEFAULT_SPLIT_SEED = 0
DEFAULT_SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
DEFAULT_PAIR_SHARD_SIZE = 256
# Peak below this is silence, not speech (-60 dBFS: ~33 of 32768 in 16-bit samples).
SILENT_PEAK_DBFS = -60.0
HINT = 0.5  # the page's faces are centred crops

_AVSPEECH_STEM = re.compile(r"(?P<yid>[A-Za-z0-9_-]{11})_(?P<start>[0-9]+(?:\.[0-9]*)?)-"
                            r"(?P<end>[0-9]+(?:\.[0-9]*)?)")
# The youtube id is 11 characters before `_<7 digits>` at the end, so the name is what is left.
_VOX_STEM = re.compile(r"(?P<group>[0-9]{4})(?P<name>[^/\\]+)_(?P<yid>[A-Za-z0-9_-]{11})_"
                       r"(?P<utt>[0-9]{7})")
# Keys a record carries beside the schema's columns (rows_to_table ignores them).
_STEM, _FOLDER, _SETTINGS = "_stem", "_folder", "_split_settings"


class PairsLayoutError(ValueError):
    """A pairs directory with none of PAIRS_FOLDERS (the CLI exits 2 on it)."""


def manifest_of(folder: str) -> str:
    return f"pairs_{folder}"


# index.html ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Labels:
    """One VoxCeleb clip's labels as the page gives them (gender lower case, `Age: ` stripped)."""

    gender: str
    native_speaker: bool
    age_band: str
    ethnicity: str


@dataclass(frozen=True)
class IndexRow:
    """One clip's rows of index.html: its stem (None when no stem row precedes the labels) and
    its labels, or the problem (with the row quoted, clipped) when they do not parse."""

    line_no: int
    stem: str | None
    labels: Labels | None
    problem: str | None


class _TableRows(HTMLParser):
    """Every `<tr>` with `<td>` cells as (line, the first cell's text pieces between `<br>`s,
    whether that cell had a `<br>`). Tolerant of unclosed tags and the page's stray `""`."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[tuple[int, list[str], bool]] = []
        self._row: tuple[int, list[str], bool] | None = None
        self._cells = 0
        self._in_first = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self._close_row()
            self._row, self._cells = (self.getpos()[0], [""], False), 0
        elif tag in ("td", "th") and self._row is not None:
            self._cells += 1
            self._in_first = tag == "td" and self._cells == 1
        elif tag == "br" and self._in_first and self._row is not None:
            line, pieces, _ = self._row
            self._row = (line, [*pieces, ""], True)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._in_first = False
        elif tag in ("tr", "table"):
            self._close_row()

    def handle_data(self, data: str) -> None:
        if self._in_first and self._row is not None:
            pieces = self._row[1]
            pieces[-1] += data

    def close(self) -> None:
        super().close()
        self._close_row()

    def _close_row(self) -> None:
        if self._row is not None and self._cells:
            self.rows.append(self._row)
        self._row, self._in_first = None, False


def _parse_labels(pieces: list[str]) -> tuple[Labels | None, str | None]:
    """Labels from `Male <br> Native <br> Age: 20-39 <br> Ethnicity: ...`, or the problem."""
    found: dict[str, Any] = {}
    unknown = []
    for piece in (p.strip() for p in pieces):
        low = piece.lower()
        if not piece:
            continue
        if low in ("male", "female"):
            key, value = "gender", low
        elif low in ("native", "non-native"):
            key, value = "native_speaker", low == "native"
        elif low.startswith("age:") and piece[4:].strip():
            key, value = "age_band", piece[4:].strip()
        elif low.startswith("ethnicity:") and piece[10:].strip():
            key, value = "ethnicity", piece[10:].strip()
        else:
            unknown.append(piece)
            continue
        if key in found:
            return None, f"two {key} parts"
        found[key] = value
    missing = [k for k in ("gender", "native_speaker", "age_band", "ethnicity") if k not in found]
    if unknown or missing:
        parts = [f"no {', '.join(missing)}"] if missing else []
        if unknown:  # the row is quoted whole after this: name the first stray part briefly
            more = f" (+{len(unknown) - 1} more)" if len(unknown) > 1 else ""
            parts.append(f"not a label: {unknown[0][:40]!r}{more}")
        return None, "; ".join(parts)
    return Labels(**found), None


def parse_index_rows(path: Path) -> list[IndexRow]:
    """index.html as one IndexRow per clip: a `<tr>` whose first `<td>` is the stem, then a
    `<tr>` whose first `<td>` holds the labels between `<br>`s. Read with `html.parser`."""
    parser = _TableRows()
    parser.feed(Path(path).read_text(encoding="utf-8", errors="replace"))
    parser.close()
    out: list[IndexRow] = []
    pending: tuple[int, str] | None = None  # the last stem row, waiting for its labels
    for line, pieces, has_br in parser.rows:
        text = "<br>".join(pieces).strip()
        if not text:
            continue  # a header row (<th> cells) or an empty row
        if has_br or "age:" in text.lower():
            labels, problem = _parse_labels(pieces)
            stem = pending[1] if pending else None
            if problem:
                problem = f"index.html line {line}: labels do not parse ({problem}): {quote(text)}"
            elif pending is None:
                problem = f"index.html line {line}: labels with no stem row before them: " \
                          f"{quote(text)}"
            out.append(IndexRow(line, stem, labels if problem is None else None, problem))
            pending = None
            continue
        if pending is not None:
            out.append(IndexRow(pending[0], pending[1], None,
                                f"index.html line {pending[0]}: stem row with no label row"))
        pending = None
        if len(text.split()) == 1:
            pending = (line, text)
        else:
            out.append(IndexRow(line, None, None, f"index.html line {line}: neither a stem nor "
                                                  f"labels: {quote(text)}"))
    if pending is not None:
        out.append(IndexRow(pending[0], pending[1], None,
                            f"index.html line {pending[0]}: stem row with no label row"))
    return out


def parse_index_html(path: Path) -> tuple[dict[str, Labels], list[tuple[int, str]]]:
    """stem -> Labels, and the rows that do not parse as (line number, reason quoting the row,
    clipped to 200 characters)."""
    rows = parse_index_rows(path)
    labels = {r.stem: r.labels for r in rows if r.stem and r.labels is not None}
    bad = [(r.line_no, r.problem) for r in rows if r.problem is not None]
    return labels, bad


# Listing and records ---------------------------------------------------------------------------

def _listing(directory: Path, extensions: tuple[str, ...]) -> dict[str, Path]:
    """stem -> file of a folder (hidden files and other extensions ignored); a stem with two
    extensions keeps the one listed first in `extensions`."""
    if not directory.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in directory.iterdir():
        ext = path.suffix.lower()
        if path.name.startswith(".") or ext not in extensions or not path.is_file():
            continue
        known = found.get(path.stem)
        if known is None or extensions.index(ext) < extensions.index(known.suffix.lower()):
            found[path.stem] = path
    return found


def _is_assistant(stem: str) -> bool:
    return any(name.lower() in stem.lower() for name in VOICE_ASSISTANTS)


def parse_stem(folder: str, stem: str) -> dict[str, Any] | str:
    """The clip fields a stem gives (clip_key, youtube_id, person_id, start_s, end_s), or why
    it is not a stem of that folder."""
    if folder == "voxceleb":
        match = _VOX_STEM.fullmatch(stem)
        if match is None:
            return (f"file stem {quote(stem)} is not <4 digits><Name>_<youtube_id>_<7 digits> "
                    "(VoxCeleb style)")
        key = f"vox_{match['name']}_{match['yid']}_{match['utt']}"
        return {"clip_key": key, "youtube_id": match["yid"], "person_id": match["name"],
                "start_s": 0.0, "end_s": None}
    match = _AVSPEECH_STEM.fullmatch(stem)
    if match is None:
        return f"file stem {quote(stem)} is not <youtube_id>_<start>-<end> (AVSpeech style)"
    start, end = float(match["start"]), float(match["end"])
    if not start < end:
        return f"file stem {quote(stem)}: start {start:g} s is not before end {end:g} s"
    return {"clip_key": clip_key(match["yid"], start, end), "youtube_id": match["yid"],
            "person_id": match["yid"], "start_s": start, "end_s": end}


def _image(folder_dir: Path, sub: str, stem: str) -> str | None:
    for ext in IMAGE_EXTENSIONS:
        path = folder_dir / sub / f"{stem}{ext}"
        if path.is_file():
            return str(path.resolve())
    return None


def _file_status(folder: str, audio: Path | None, face: Path | None, stem: str
                 ) -> tuple[str, str | None]:
    if folder == DISTRACTOR_FOLDER:
        return "face_only", None
    if face is None:
        return "missing_face", (f"no {folder}/Face_ori/{stem}.(jpg|jpeg|png) for "
                                f"{folder}/Wav/{audio.name if audio else stem}")
    if audio is None:
        return "missing_audio", (f"no {folder}/Wav/{stem}.(flac|wav) for "
                                 f"{folder}/Face_ori/{face.name}")
    return "ok", None


def _blank(folder: str, line_no: int) -> dict[str, Any]:
    """Every `clips` column, null, for one stem of a folder (status ok until told otherwise)."""
    record: dict[str, Any] = dict.fromkeys(CLIPS.names)
    record.update({"manifest": manifest_of(folder), "line_no": line_no, "status": "ok",
                   _STEM: None, _FOLDER: folder})
    return record


def _record(folder: str, folder_dir: Path, line_no: int, stem: str, audio: Path | None,
            face: Path | None) -> dict[str, Any]:
    """One record from the listing alone (no labels, no duplicates yet)."""
    record = _blank(folder, line_no)
    record.update({
        "hint_x": HINT, "hint_y": HINT,
        "media_path": str(audio.resolve()) if audio else None,
        "face_image_path": str(face.resolve()) if face else None,
        "paper_s2f_path": _image(folder_dir, "Face_exg0", stem),
        "paper_f2f_path": _image(folder_dir, "Face_f2f", stem),
        _STEM: stem,
    })
    parsed = parse_stem(folder, stem)
    if isinstance(parsed, str):
        record["status"], record["error"] = "invalid_row", parsed
        return record
    record.update(parsed)
    record["status"], record["error"] = _file_status(folder, audio, face, stem)
    return record


def find_folders(root: Path) -> dict[str, Path]:
    """folder name -> its directory: `root/<folder>`, else where a clone of the page's
    repository keeps it (`root/figures/<folder>`, `root/supplemental/<folder>`)."""
    found = {}
    for folder in PAIRS_FOLDERS:
        for parent in CLONE_PARENTS:
            candidate = root / parent / folder
            if candidate.is_dir():
                found[folder] = candidate
                break
    return found


def _scan_folder(folder_dir: Path, folder: str) -> list[dict[str, Any]]:
    faces = _listing(folder_dir / "Face_ori", IMAGE_EXTENSIONS)
    audio = {} if folder == DISTRACTOR_FOLDER else _listing(folder_dir / "Wav", AUDIO_EXTENSIONS)
    stems = sorted(s for s in set(faces) | set(audio) if not _is_assistant(s))
    records = [_record(folder, folder_dir, n, stem, audio.get(stem), faces.get(stem))
               for n, stem in enumerate(stems, 1)]
    index = folder_dir / "index.html"
    if folder == "voxceleb" and index.is_file():
        _apply_index(records, parse_index_rows(index), folder)
    return records


def _apply_index(records: list[dict[str, Any]], rows: list[IndexRow], folder: str) -> None:
    """Labels onto the records; a record whose row does not parse is `invalid_row`; a bad row
    naming no listed stem becomes a record of its own after the listing."""
    by_stem = {r[_STEM]: r for r in records}
    next_line = len(records) + 1
    for row in rows:
        if row.stem is not None and _is_assistant(row.stem):
            continue
        record = by_stem.get(row.stem) if row.stem is not None else None
        if record is None:
            if row.problem is not None:
                records.append({**_blank(folder, next_line), "status": "invalid_row",
                                "error": row.problem})
                next_line += 1
            continue
        if row.labels is not None:
            record.update(asdict(row.labels))
        elif record["status"] == "ok":
            record["status"], record["error"] = "invalid_row", row.problem


def _mark_duplicates(records: list[dict[str, Any]]) -> None:
    """A clip key seen before (any folder, any status) makes the later stem a `duplicate`."""
    first: dict[str, dict[str, Any]] = {}
    for record in records:
        key = record.get("clip_key")
        if key is None:
            continue
        earlier = first.setdefault(key, record)
        if earlier is not record:
            record["status"] = "duplicate"
            record["error"] = (f"duplicate of {earlier[_FOLDER]}/{earlier[_STEM]} "
                               f"({earlier['manifest']} line {earlier['line_no']}; same clip "
                               f"key {key})")


def _layout_message(root: Path) -> str:
    folders = "; ".join(f"{name}/ ({what})" for name, what in FOLDER_CONTENTS.items())
    return (f"{root} has none of the folders of a Speech2Face project page directory: "
            f"{folders} (looked for in it and under its figures/ and supplemental/, where a "
            f"clone of the page's repository has them). Point at the directory holding them: "
            f"a clone of the page's repository, or ../shared/data/speech2face-page")


def scan_pairs(root: Path) -> list[dict[str, Any]]:
    """One `clips` record per stem found in `Wav/` or `Face_ori/` of each folder present
    (avspeech_res, voxceleb, retrieve; `find_folders`), in folder then listing order, with every column known
    before decoding and status ok / face_only / missing_face / missing_audio / duplicate /
    invalid_row; `split` is None until `assign_splits`. The page's voice-assistant rows
    (`Zz_Alexa`, `Zz_Google`, `Zz_Siri`: no human face) are skipped. Raises PairsLayoutError
    when `root` has none of PAIRS_FOLDERS."""
    root = Path(root).expanduser()
    present = find_folders(root)
    if not present:
        raise PairsLayoutError(_layout_message(root))
    records = [r for folder, where in present.items() for r in _scan_folder(where, folder)]
    _mark_duplicates(records)
    return records


# Splits ----------------------------------------------------------------------------------------

def _check_fractions(fractions: tuple[float, ...]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or min(values) < 0 or not math.isclose(math.fsum(values), 1.0,
                                                               abs_tol=1e-9):
        raise ValueError(f"fractions must be three non-negative numbers (train, dev, test) "
                         f"summing to 1, not {fractions!r}")
    return values  # type: ignore[return-value]


def _person_strata(records: list[dict[str, Any]]) -> dict[str | None, list[str]]:
    """Persons with a record in a pairs folder (whatever its status: a person's split does not
    change when a file of theirs is fixed), by gender: the most common label of their records,
    None for the unlabelled."""
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    for record in records:
        person = record.get("person_id")
        if person is None or record["manifest"] == manifest_of(DISTRACTOR_FOLDER):
            continue
        votes[person].update([record["gender"]] if record.get("gender") else [])
    strata: dict[str | None, list[str]] = defaultdict(list)
    for person, counts in votes.items():
        gender = min(counts, key=lambda g: (-counts[g], g)) if counts else None
        strata[gender].append(person)
    return strata


def split_persons(records: list[dict[str, Any]], seed: int = DEFAULT_SPLIT_SEED,
                  fractions: tuple[float, ...] = DEFAULT_SPLIT_FRACTIONS) -> dict[str, str]:
    """person -> split for every person with pairs: within each gender stratum persons are
    ordered by sha256(f"{seed}:{person}") (the same on any machine) and cut at the cumulative
    fractions, rounded half up."""
    train, dev, _ = _check_fractions(fractions)
    out: dict[str, str] = {}
    for _gender, persons in sorted(_person_strata(records).items(),
                                   key=lambda kv: (kv[0] is None, kv[0] or "")):
        ordered = sorted(persons, key=lambda p: (hashlib.sha256(f"{seed}:{p}".encode())
                                                 .hexdigest(), p))
        n = len(ordered)
        cut_train = math.floor(n * train + 0.5)
        cut_dev = max(cut_train, math.floor(n * math.fsum((train, dev)) + 0.5))
        for i, person in enumerate(ordered):
            out[person] = "train" if i < cut_train else "dev" if i < cut_dev else "test"
    return out


def assign_splits(records: list[dict[str, Any]], seed: int = DEFAULT_SPLIT_SEED,
                  fractions: tuple[float, ...] = DEFAULT_SPLIT_FRACTIONS) -> None:
    """Set every record's `split` in place, by person (`split_persons`): all records of a
    person share it. A distractor (`face_only`) takes its person's split when that person has
    pairs, else `test`, so a distractor of a train or dev person never enters the test pool;
    records with no person (stems that do not parse) are `test`."""
    split_of = split_persons(records, seed, fractions)
    settings = {"seed": int(seed), "fractions": list(_check_fractions(fractions))}
    for record in records:
        record["split"] = split_of.get(record.get("person_id") or "", "test")
        record[_SETTINGS] = settings


# Shards ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PairShard:
    """Records [first_line, first_line + len(records)) of one folder's listing, splits set."""

    manifest: str
    index: int
    records: tuple[dict[str, Any], ...]

    @property
    def first_line(self) -> int:
        return int(self.records[0]["line_no"]) if self.records else 0


def plan_pair_shards(records: list[dict[str, Any]],
                     shard_size: int = DEFAULT_PAIR_SHARD_SIZE) -> list[PairShard]:
    """Each folder's records in listing order, cut into shards of `shard_size`."""
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    if any(r.get("split") not in SPLITS for r in records):
        raise ValueError("every record needs a split: call assign_splits(records) first")
    by_manifest: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_manifest[record["manifest"]].append(record)
    shards = []
    for folder in PAIRS_FOLDERS:
        rows = sorted(by_manifest.get(manifest_of(folder), []), key=lambda r: r["line_no"])
        for index, begin in enumerate(range(0, len(rows), shard_size)):
            shards.append(PairShard(manifest_of(folder), index,
                                    tuple(rows[begin:begin + shard_size])))
    return shards


def _file_state(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        st = Path(path).stat()
    except OSError as exc:
        return f"{path}:absent:{type(exc).__name__}"
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def pair_shard_fingerprint(shard: PairShard) -> str:
    """SHA-256 of everything the shard's rows depend on: the records as scanned (stems, paths,
    statuses, labels, splits), the files' size and mtime, the split's seed and fractions, and
    PAIRS_VERSION."""
    columns = [f.name for f in CLIPS]
    payload = {
        "version": PAIRS_VERSION, "manifest": shard.manifest, "index": shard.index,
        "settings": shard.records[0].get(_SETTINGS) if shard.records else None,
        "records": [[r.get(_STEM)] + [r.get(c) for c in columns] for r in shard.records],
        "files": [[_file_state(r.get(c)) for c in ("media_path", "face_image_path",
                                                    "paper_s2f_path", "paper_f2f_path")]
                  for r in shard.records],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _stems_sha256(shard: PairShard) -> str:
    text = "\n".join(str(r.get(_STEM)) for r in shard.records)
    return hashlib.sha256(text.encode()).hexdigest()


# Audio -----------------------------------------------------------------------------------------

def probe_audio_codec(path: Path) -> str:
    """The codec of the file's first audio stream (flac, pcm_s16le, ...); MediaError
    corrupt_media (empty, not a media file) or no_audio."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise MediaError("corrupt_media", f"{path} is empty (0 bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError("no_audio", f"{path} has no audio stream")
            return str(container.streams.audio[0].codec_context.name)
    except av.error.FFmpegError as exc:
        raise MediaError("corrupt_media", f"{path} is not a readable audio file (truncated or "
                                          f"not audio): {exc.strerror}") from exc


def decode_pair_audio(path: Path) -> tuple[np.ndarray, str]:
    """int16 mono samples at 16 kHz (`s2f.media.audio.load_audio`: any rate and layout PyAV
    reads) and the codec. Refused as MediaError: corrupt_media (empty file or no samples, NaN or
    inf samples, silence: peak below SILENT_PEAK_DBFS) or decode_failed (the decoder rejects it)."""
    codec = probe_audio_codec(path)
    return read_checked_audio(path), codec


def read_checked_audio(path: Path) -> np.ndarray:
    """`decode_pair_audio` without the probe: the checked int16 samples."""
    try:
        wave = load_audio(path, SAMPLE_RATE)
    except av.error.FFmpegError as exc:
        raise MediaError("decode_failed", f"audio of {path} could not be decoded: {exc}") from exc
    except ValueError as exc:  # load_audio: no samples decoded
        raise MediaError("corrupt_media", f"empty: {exc}") from exc
    bad = int(np.count_nonzero(~np.isfinite(wave)))
    if bad:
        raise MediaError("corrupt_media", f"{path}: {bad} of {wave.size} samples are NaN or inf")
    peak = float(np.max(np.abs(wave)))
    if peak < 10 ** (SILENT_PEAK_DBFS / 20):
        level = f"{20 * math.log10(peak):.1f} dBFS" if peak > 0 else "every sample is 0"
        raise MediaError("corrupt_media", f"{path} is silent (peak {level}, below "
                                          f"{SILENT_PEAK_DBFS:g} dBFS)")
    # x * 32768 undoes PyAV's s16 -> float exactly, so 16-bit input is kept bit for bit.
    return np.clip(np.round(wave.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)


def _ingest_audio(row: dict[str, Any], pack: PackWriter) -> None:
    """Decode, check and write one ok record's audio; a bad file marks the row only."""
    path = Path(row["media_path"])
    try:
        row["audio_codec"] = probe_audio_codec(path)
        samples = read_checked_audio(path)
    except MediaError as exc:
        row["status"], row["error"] = exc.status, exc.reason
        return
    except Exception as exc:  # PyAV or the OS raising something unforeseen on a strange file
        row["status"], row["error"] = "error", f"reading {path}: {type(exc).__name__}: {exc}"[:400]
        return
    # Writing is outside the try: a full disk must stop the shard, not mark the clip.
    row["audio_path"] = pack.add(row["clip_key"], encode_flac(samples))
    row["audio_samples"] = int(samples.size)
    row["media_duration_s"] = samples.size / SAMPLE_RATE
    if row.get("end_s") is None:  # VoxCeleb: the clip is the whole file
        row["end_s"] = row["media_duration_s"]


def ingest_pair_shard(shard: PairShard, layout: DataLayout) -> ShardResult:
    """Write `tables/clips/<manifest>/shard-NNNNN.parquet` unless its fingerprint is current
    (then nothing is read or written: a re-run adds no rows). Each ok record's audio is
    decoded, checked and written as 16 kHz mono FLAC into the shard's pack first
    (`s2f.media.packs`); the Parquet file, written last and atomically, is the commit point
    (earlier packs of the shard stay until `s2f gc` finds no row naming them). One bad file
    marks its row; an OSError while writing (a full disk) stops the shard. A current shard whose pack is gone or short
    is redone."""
    out = layout.shard_path(TABLE, shard.manifest, shard.index)
    fingerprint = pair_shard_fingerprint(shard)
    extra = read_extra(out) if out.exists() else None
    if extra and extra.get("fingerprint") == fingerprint and audio_damage(layout, out) is None:
        return ShardResult(shard.manifest, shard.index, str(out), True,
                           dict(extra.get("counts", {})))
    rows = [dict(r) for r in shard.records]  # the plan stays as scanned
    pack_path = layout.pack_path(out, pack_token(fingerprint))
    with PackWriter(pack_path, layout) as pack:
        for row in rows:
            if row["status"] == "ok":
                _ingest_audio(row, pack)
    counts = dict(Counter(r["status"] for r in rows))
    settings = shard.records[0].get(_SETTINGS) if shard.records else None
    write_table_atomic(rows_to_table(rows, CLIPS), out, extra={
        "fingerprint": fingerprint, "stems_sha256": _stems_sha256(shard),
        "first_line": shard.first_line, "last_line": shard.first_line + len(rows) - 1,
        "n_stems": len(rows), "counts": counts, "split_settings": settings,
        "pairs_version": PAIRS_VERSION,
    })
    return ShardResult(shard.manifest, shard.index, str(out), False, counts)


def remove_stale_pair_shards(layout: DataLayout, shards: list[PairShard]) -> list[Path]:
    """Delete shards past the end of each pairs folder's plan (all of a folder now absent)."""
    n_shards = Counter(s.manifest for s in shards)
    removed: list[Path] = []
    for folder in PAIRS_FOLDERS:
        removed += remove_stale_shards(layout, manifest_of(folder),
                                       n_shards.get(manifest_of(folder), 0))
    return removed


def ingest_pairs(root: Path, layout: DataLayout, seed: int = DEFAULT_SPLIT_SEED,
                 fractions: tuple[float, ...] = DEFAULT_SPLIT_FRACTIONS,
                 shard_size: int = DEFAULT_PAIR_SHARD_SIZE) -> list[ShardResult]:
    """scan_pairs, assign_splits, every shard, then the stale shards removed (no Prefect)."""
    records = scan_pairs(root)
    assign_splits(records, seed, fractions)
    shards = plan_pair_shards(records, shard_size)
    results = [ingest_pair_shard(shard, layout) for shard in shards]
    remove_stale_pair_shards(layout, shards)
    return results


# Counts and the command line -------------------------------------------------------------------

def pair_counts(layout: DataLayout) -> dict[str, list[tuple[Any, ...]]]:
    """What the pairs tables hold: clips by (folder, split, status), and persons and usable
    clips (ok or face_only) by (folder, split)."""
    import polars as pl

    from storage.io import scan

    manifests = [manifest_of(f) for f in PAIRS_FOLDERS]
    frame = scan(layout, TABLE).filter(pl.col("manifest").is_in(manifests)).collect()
    by_status = (frame.group_by("manifest", "split", "status").len("clips")
                 .sort("manifest", "split", "status"))
    usable = (frame.filter(pl.col("status").is_in(["ok", "face_only"]))
              .group_by("manifest", "split")
              .agg(pl.col("person_id").n_unique().alias("persons"), pl.len().alias("clips"))
              .sort("manifest", "split"))
    return {"by_status": by_status.rows(), "usable": usable.rows()}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        print("usage: python -m s2f.ingest.pairs PAIRS_DIR DATA_DIR [SHARD_SIZE]", file=sys.stderr)
        return 2
    layout = DataLayout(Path(args[1])).ensure()
    try:
        results = ingest_pairs(Path(args[0]), layout,
                               shard_size=int(args[2]) if len(args) == 3 else
                               DEFAULT_PAIR_SHARD_SIZE)
    except PairsLayoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    skipped = sum(r.skipped for r in results)
    print(f"{len(results)} shards ({skipped} unchanged, skipped) under {layout.root}")
    counts = pair_counts(layout)
    print("\nclips by folder, split, status:")
    for manifest, split, status, n in counts["by_status"]:
        print(f"  {manifest:<20} {split:<6} {status:<14} {n}")
    print("\npersons and usable clips (ok, face_only) by folder, split:")
    for manifest, split, persons, n in counts["usable"]:
        print(f"  {manifest:<20} {split:<6} {persons:>5} persons {n:>5} clips")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
