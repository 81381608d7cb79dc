"""Models of the pipeline: the paper's voice encoder and a Cole et al. face decoder."""
