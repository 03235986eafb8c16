"""Sweeps: spec files -> Ray Tune trials -> the Parquet results store (writing side).

Importing this package is cheap: Ray and pyarrow load only in the modules that need them.
"""
