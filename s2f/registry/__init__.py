"""Registered models: what a model is once trained, and how it is found and used.

    names.py          registered model names and `models:/` URIs
    weights.py        safetensors + JSON config files, the allow-list of architectures
    pyfunc_weights.py MLflow models-from-code for one registered torch model
    inference.py      load a registered model (pickle-free), feature and face batches
    predict.py        voice or video file -> face image, feature and sidecar
    pyfunc_model.py   the end-to-end voice -> face pyfunc
    serving.py        log the end-to-end pyfunc for `mlflow models serve`
"""
