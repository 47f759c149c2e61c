"""Batch inference: a registered MLflow model over a dataset with Ray Data (`recur predict`).

`model` resolves and fetches the registered model, `rows` checks and predicts one batch and
keeps every row, `job` runs the Ray Data plan and writes Parquet, `device` runs a model on a GPU.
`rows` and `model` import no Ray; `job` does.
"""
