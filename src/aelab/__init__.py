"""aelab: learn representations without labels with autoencoders.

    import aelab
    data = aelab.load_dataset("mnist5k")
    model = aelab.build_model("dense", latent_dim=32)
    run = aelab.train(model, data, epochs=10, out="runs/dense32")
"""
from .version import __version__

from .api import tour, train
from .config import RunConfig
from .data import Dataset, from_arrays, load_dataset
from .errors import AelabError
from .evaluation import evaluate_model, evaluate_run
from .registry import MODELS, build_model, load_model, save_model
from .runfolder import Run, open_run

__all__ = ["AelabError", "Dataset", "MODELS", "Run", "RunConfig", "build_model", "evaluate_model", "evaluate_run",
           "from_arrays", "load_dataset", "load_model", "open_run", "save_model", "tour", "train"]
