"""Datasets (by name or from arrays), the IDX reader, downloads and device batches.

Inside the package, imports run one way: batches, idx, download <- dataset (the Dataset class and
user arrays) <- memmap (.npy files) <- datasets (datasets by name).
"""
from .batches import as_float, epoch_permutation, iterate_batches
from .dataset import Dataset, from_arrays
from .datasets import DATASETS, DESCRIPTIONS, cache_dir, candidate_dirs, find_files, load_dataset
from .idx import read_idx, write_idx

__all__ = ["DATASETS", "DESCRIPTIONS", "Dataset", "as_float", "cache_dir", "candidate_dirs", "epoch_permutation",
           "find_files", "from_arrays", "iterate_batches", "load_dataset", "read_idx", "write_idx"]
