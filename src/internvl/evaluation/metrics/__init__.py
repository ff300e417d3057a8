"""Metric computations. Pure: nothing here imports the rest of the package."""
