"""Hyperparameter search: search spaces from YAML and Ray Tune over the same trainer builder."""
