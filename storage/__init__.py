"""Table schemas, data-directory layout and Parquet I/O for the speech2face pipeline.

Every stage hands the next a Parquet table. This package owns their written schemas
(`storage.schemas`), where they live under the data directory (`storage.layout`), and how they
are written atomically and read back lazily (`storage.io`). See docs/tables.md.
"""
