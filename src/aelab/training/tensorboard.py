"""``--tensorboard``: a trainer callback writing what TensorBoard shows into ``<run>/tensorboard``.

- Scalars per epoch: every number of the epoch's record, grouped by what it measures (``loss/train``,
  ``loss/test``, ``loss/val``, ``recon/train``, ...), the learning rate and the epoch's speed.
- Images per epoch (image data): 16 fixed test images above their reconstructions, and, for a model that can
  sample, 16 draws from its prior (the same noise every epoch, so the grid shows the model changing).
- At the end: the test codes (up to 10,000) with their labels and thumbnails for the embedding projector.

Open with ``tensorboard --logdir runs/``. The writer comes from ``torch.utils.tensorboard``, which needs the
``tensorboard`` package: an optional extra (``pip install "aelab[tensorboard]"``), with a one-line error
naming that command when it is missing.
"""
from __future__ import annotations

import numbers
from pathlib import Path

import torch

from ..device import INFERENCE_BATCH
from ..data.batches import as_float, iterate_inputs, slice_inputs
from ..errors import AelabError
from ..models.base import GENERATIVE, eval_mode, has, model_device
from ..modality import IMAGE

GRID = 16  # images per grid
EMBEDDED = 10_000  # test codes given to the projector at most
INSTALL = 'pip install "aelab[tensorboard]"'


def summary_writer(log_dir: Path):
    """A ``SummaryWriter`` for ``log_dir``, or a one-line error saying how to install TensorBoard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise AelabError(f"--tensorboard needs the tensorboard package, which is not installed; run {INSTALL} "
                         f"(or pip install tensorboard), or train without --tensorboard") from None
    return SummaryWriter(log_dir=str(log_dir))


def scalar_tag(key: str) -> str:
    """A record key as a TensorBoard tag grouping the splits together: train_loss -> loss/train,
    test_recon/image -> recon/image/test, seconds -> speed/seconds."""
    for split in ("train", "test", "val"):
        if key.startswith(split + "_"):
            return f"{key[len(split) + 1:]}/{split}"
    return f"speed/{key}"


class TensorBoardLogger:
    """The callback (see :mod:`aelab.training.callbacks`): ``on_train_start(trainer)`` keeps the trainer,
    ``on_epoch_end(epoch, metrics)`` logs every epoch, ``on_train_end(trainer)`` adds the projector and closes.

    The test rows go to the model's device (wherever ``data`` lives) and what comes back goes to the CPU
    before the writer turns it into numpy arrays and images.
    """

    def __init__(self, log_dir: str | Path, data):
        self.log_dir = Path(log_dir)
        self.writer = summary_writer(self.log_dir)
        self.data = data
        self.labels = data.y_test
        self.trainer = None

    def on_train_start(self, trainer) -> None:
        self.trainer = trainer

    # ------------------------------------------------------------------ per epoch
    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        step = int(epoch)
        for key, value in metrics.items():
            if key != "epoch" and isinstance(value, numbers.Real):
                self.writer.add_scalar(scalar_tag(key), float(value), step)
        self.writer.add_scalar("optim/lr", float(self.trainer.optimizer.param_groups[0]["lr"]), step)
        self.add_images(self.trainer.model, step)
        self.writer.flush()

    def add_images(self, model, step: int) -> None:
        test = self.data.inputs("test")
        if IMAGE not in test or test[IMAGE].dim() != 4 or test[IMAGE].shape[1] not in (1, 3):
            return
        batch = _on(model, next(iterate_inputs(slice_inputs(test, slice(0, GRID)), GRID)))
        with eval_mode(model), torch.inference_mode():
            recon = _image_of(model.decode(model.encode(batch)))
            if recon is not None:
                shown = batch[IMAGE].cpu()
                pairs = torch.cat([shown, recon.cpu().reshape(shown.shape)]).float().clamp(0, 1)
                self.writer.add_images("reconstructions (top: test images, bottom: decoded)", pairs, step)
            if has(model, GENERATIVE):  # the same noise every epoch
                drawn = _image_of(model.sample(GRID, generator=torch.Generator(device="cpu").manual_seed(0)))
                if drawn is not None:
                    self.writer.add_images("samples from the prior", drawn.cpu().float().clamp(0, 1), step)

    # ------------------------------------------------------------------ at the end
    def on_train_end(self, trainer) -> None:
        model = trainer.model
        test = slice_inputs(self.data.inputs("test"), slice(0, EMBEDDED))
        with eval_mode(model), torch.inference_mode():
            codes = torch.cat([model.encode(_on(model, b)).cpu().float()
                               for b in iterate_inputs(test, INFERENCE_BATCH)])
        n = len(codes)
        labels = None if self.labels is None else self.labels[:n].cpu().tolist()
        if labels is not None and self.data.classes:
            labels = [self.data.classes[i] for i in labels]
        thumbs = None
        if IMAGE in test and test[IMAGE].dim() == 4 and test[IMAGE].shape[1] in (1, 3):
            thumbs = as_float(test[IMAGE]).float().cpu()
        self.writer.add_embedding(codes, metadata=labels, label_img=thumbs, global_step=trainer.epoch,
                                  tag="test codes")
        self.writer.close()


def _on(model, batch: dict) -> dict:
    """``batch`` on ``model``'s device."""
    device = model_device(model)
    return {k: v.to(device) for k, v in batch.items()}


def _image_of(out) -> torch.Tensor | None:
    """The image part of a model's output: the tensor itself, or a mapping's "image" entry (None without)."""
    if isinstance(out, dict):
        out = out.get(IMAGE)
    if out is None or out.dim() != 4 or out.shape[1] not in (1, 3):
        return None
    return out
