"""Release: from an evaluated version to a promoted one, and what people read about it.

    promote.py     the promotion gate (reads dev only) and the `champion` alias
    model_card.py  the model card of a version
    report.py      the demo's report: the paper's tables with their controls
"""

# The gate's floor on (spread of the predicted features) / (spread of the true ones): a
# collapsed model (every voice -> nearly the same face) is never promoted. Here, not in
# promote.py, so that the command line can show it without importing MLflow.
DEFAULT_MIN_DIVERSITY = 0.2
