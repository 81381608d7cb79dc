"""Prefect flows: thin orchestration over the `s2f` library, one module per pipeline stage."""
