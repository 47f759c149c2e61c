"""Measured comparisons, run side by side in one process: `python -m benchmarks NAME`.

Not run by the test suite. Each benchmark prints a table and writes JSON to benchmarks/results/.
"""
