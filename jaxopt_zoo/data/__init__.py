"""Data: an IDX reader and writer, and verified MNIST / Fashion-MNIST loaders."""

from jaxopt_zoo.data.datasets import (
    DATASET_NAMES,
    Dataset,
    load,
    load_fashion_mnist,
    load_mnist,
)
from jaxopt_zoo.data.idx import DataError, DataNotFoundError, read_idx, write_idx

__all__ = [
    "DATASET_NAMES",
    "DataError",
    "DataNotFoundError",
    "Dataset",
    "load",
    "load_fashion_mnist",
    "load_mnist",
    "read_idx",
    "write_idx",
]
