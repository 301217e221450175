"""Datasets (by name or from arrays), the IDX reader, downloads and device batches."""
from .batches import as_float, epoch_permutation, iterate_batches
from .datasets import DATASETS, DESCRIPTIONS, Dataset, cache_dir, candidate_dirs, find_files, from_arrays, load_dataset
from .idx import read_idx, write_idx

__all__ = ["DATASETS", "DESCRIPTIONS", "Dataset", "as_float", "cache_dir", "candidate_dirs", "epoch_permutation",
           "find_files", "from_arrays", "iterate_batches", "load_dataset", "read_idx", "write_idx"]
