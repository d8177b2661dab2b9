"""Data: an IDX reader and writer, verified MNIST / Fashion-MNIST loaders, and the
Shakespeare corpus."""

from jaxopt_zoo.data.datasets import (
    DATASET_NAMES,
    Dataset,
    load,
    load_fashion_mnist,
    load_mnist,
)
from jaxopt_zoo.data.idx import DataError, DataNotFoundError, read_idx, write_idx
from jaxopt_zoo.data.text import (
    CharVocab,
    TextData,
    char_vocab,
    eval_windows,
    load_shakespeare,
    read_shakespeare,
    sample_windows,
    split_tokens,
)

__all__ = [
    "DATASET_NAMES",
    "CharVocab",
    "DataError",
    "DataNotFoundError",
    "Dataset",
    "TextData",
    "char_vocab",
    "eval_windows",
    "load",
    "load_fashion_mnist",
    "load_mnist",
    "load_shakespeare",
    "read_idx",
    "read_shakespeare",
    "sample_windows",
    "split_tokens",
    "write_idx",
]
