"""Hyperparameter sweeps in one vmapped program (:mod:`.api`), how a grid is split into
chunks (:mod:`.plan`), the compiled programs (:mod:`.run`), what one configuration computes
per workload (:mod:`.workloads`) and the results' tables and plots (:mod:`.report`)."""

from jaxopt_zoo.train.sweep.api import Chunking, SweepConfig, SweepResult, grid_points, sweep

__all__ = ["Chunking", "SweepConfig", "SweepResult", "grid_points", "sweep"]
