"""Release: from an evaluated version to a promoted one, and what people read about it.

    promote.py     the promotion gate (reads dev only) and the `champion` alias
    model_card.py  the model card of a version
    report.py      the demo's report: the paper's tables with their controls
"""
