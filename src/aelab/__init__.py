"""aelab: learn representations without labels with autoencoders.

    import aelab
    data = aelab.load_dataset("mnist5k")
    model = aelab.build_model("dense", latent_dim=32)
    run = aelab.train(model, data, epochs=10, out="runs/dense32")

The package is built in layers; a module imports only its own layer and the ones below it (no cycles, and
no imports inside functions except optional dependencies and the CLI's lazy command loading;
tests/test_architecture.py checks both):

    8  cli, commands, web     the command line and the latent-space explorer: they only call down
    7  api, sklearn,          train() and tour() (reporting at the end of a run is called from here);
       oneclass               the one-class anomaly protocol (aelab one-class)
    6  viz                    figures and the HTML reports
    5  training, evaluation,  the trainer; metrics and the one table of metric specs; inference
       predict
    4  runfolder              the run folder: its file names, Run, open_run
    3  config                 RunConfig: the training settings plus the model's, saved with every run
    2  registry               model name -> class, build/save/load a model from its spec
    1  data, models           datasets and batches; one file per model family with its settings
    0  errors, io, device,    one-line errors, atomic files and checkpoints, the device, pure loss
       losses, modality,      functions, what a modality is, the version
       version
"""
from .version import __version__

from .api import tour, train
from .config import RunConfig
from .data import Dataset, from_arrays, load_dataset
from .errors import AelabError
from .evaluation import evaluate_model, evaluate_run
from .predict import Predictor
from .models.base import BaseAutoencoder, has
from .registry import MODELS, build_model, load_model, register_model, save_model
from .runfolder import Run, open_run

__all__ = ["AelabError", "BaseAutoencoder", "Dataset", "MODELS", "Predictor", "Run", "RunConfig", "build_model",
           "evaluate_model", "evaluate_run", "from_arrays", "has", "load_dataset", "load_model", "open_run",
           "register_model", "save_model", "tour", "train"]
