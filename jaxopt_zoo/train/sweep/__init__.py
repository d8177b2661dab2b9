"""Hyperparameter sweeps in one vmapped program (``.api``), how a grid is split into
chunks (``.plan``), the compiled programs (``.run``), what one configuration computes
per workload (``.workloads``) and the results' tables and plots (``.report``)."""

from jaxopt_zoo.train.sweep.api import Chunking, SweepConfig, SweepResult, grid_points, sweep

__all__ = ["Chunking", "SweepConfig", "SweepResult", "grid_points", "sweep"]
