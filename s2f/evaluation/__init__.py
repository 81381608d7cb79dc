"""Evaluation of a registered voice encoder (+ face decoder) with the paper's metrics.

- `data`: the identity-disjoint test set (clips ⋈ face_features), its snapshot id, the training
  mean feature, identities of the demo corpus.
- `scores`: every metric from arrays (similarity, retrieval with CIs, mean-face baseline,
  diversity, craniofacial correlations, voice-parameter read-out).
- `figures`: face grid, recall@K curves, correlation table (matplotlib, Agg).
- `record`: MLflow logging and the `evaluations` Parquet table.
- `run`: `evaluate_model(layout, model_uri, decoder_uri)` ties them together.

    python -m s2f.evaluation.run DATA_DIR [MODEL_URI [DECODER_URI]]
"""
