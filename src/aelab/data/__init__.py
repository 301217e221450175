"""Datasets (by name, by path or from arrays), the IDX reader, downloads and device batches.

Inside the package, imports run one way: batches, idx, download, cache <- dataset (the Dataset class and
user arrays) <- memmap (.npy files) <- folders (folders of images), tables <- own (the user's own data by
path, and new inputs read as a run reads them) <- datasets (datasets by name or path).
"""
from .batches import as_float, epoch_permutation, iterate_batches
from .cache import cache_dir
from .dataset import Dataset, from_arrays
from .datasets import DATASETS, DESCRIPTIONS, candidate_dirs, find_files, load_dataset
from .idx import read_idx, write_idx
from .own import ID_NAMES, read_inputs, transform_of

__all__ = ["DATASETS", "DESCRIPTIONS", "Dataset", "ID_NAMES", "as_float", "cache_dir", "candidate_dirs",
           "epoch_permutation", "find_files", "from_arrays", "iterate_batches", "load_dataset", "read_idx",
           "read_inputs", "transform_of", "write_idx"]
