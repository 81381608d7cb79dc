"""The written schemas: documented, versioned, and docs/tables.md kept current."""

from __future__ import annotations

from pathlib import Path

from storage import schemas
from storage.layout import DataLayout, clip_key, safe_name

ROOT = Path(__file__).resolve().parents[1]


def test_every_field_is_documented_and_versioned() -> None:
    for name, schema in schemas.TABLES.items():
        meta = schema.metadata or {}
        assert meta[b"s2f.table"].decode() == name
        assert meta[b"s2f.schema_version"].decode() == str(schemas.SCHEMA_VERSION)
        for field in schema:
            assert (field.metadata or {}).get(b"doc"), f"{name}.{field.name} has no doc"


def test_docs_tables_md_is_generated_from_schemas() -> None:
    written = (ROOT / "docs" / "tables.md").read_text()
    assert written.strip() == schemas.to_markdown().strip(), (
        "docs/tables.md is stale: run `python -m storage.schemas > docs/tables.md`")


def test_clip_key_distinguishes_segments_of_one_video() -> None:
    a, b = clip_key("AvWWVOgaMlk", 90.0, 93.5), clip_key("AvWWVOgaMlk", 93.5, 97.0)
    assert a != b and a.startswith("AvWWVOgaMlk_")
    assert clip_key("AvWWVOgaMlk", 1.0004, 2.0) == clip_key("AvWWVOgaMlk", 1.0, 2.0)


def test_layout_rejects_unsafe_names(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    assert layout.shard_path("clips", "avspeech_train", 3).name == "shard-00003.parquet"
    for bad in ("../etc", "a/b", "", ".hidden", "x" * 200):
        try:
            safe_name(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")
