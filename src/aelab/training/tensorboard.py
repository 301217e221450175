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

from ..data.batches import as_float, iterate_inputs, slice_inputs
from ..errors import AelabError
from ..models.base import eval_mode
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
    """The callback: ``on_epoch(trainer, record)`` after every epoch, ``on_end(trainer)`` once training ends."""

    def __init__(self, log_dir: str | Path, data):
        self.log_dir = Path(log_dir)
        self.writer = summary_writer(self.log_dir)
        self.data = data
        self.labels = data.y_test

    # ------------------------------------------------------------------ per epoch
    def on_epoch(self, trainer, record: dict) -> None:
        step = int(record["epoch"])
        for key, value in record.items():
            if key != "epoch" and isinstance(value, numbers.Real):
                self.writer.add_scalar(scalar_tag(key), float(value), step)
        self.writer.add_scalar("optim/lr", float(trainer.optimizer.param_groups[0]["lr"]), step)
        self.add_images(trainer.model, step)
        self.writer.flush()

    def add_images(self, model, step: int) -> None:
        test = self.data.inputs("test")
        if IMAGE not in test or test[IMAGE].dim() != 4 or test[IMAGE].shape[1] not in (1, 3):
            return
        batch = next(iterate_inputs(slice_inputs(test, slice(0, GRID)), GRID))
        with eval_mode(model), torch.inference_mode():
            recon = _image_of(model.decode(model.codes(batch)))
            if recon is not None:
                pairs = torch.cat([batch[IMAGE], recon.reshape(batch[IMAGE].shape)]).float().clamp(0, 1)
                self.writer.add_images("reconstructions (top: test images, bottom: decoded)", pairs.cpu(), step)
            if callable(getattr(model, "sample", None)):
                try:  # the same noise every epoch
                    drawn = _image_of(model.sample(GRID, generator=torch.Generator(device="cpu").manual_seed(0)))
                except AelabError:  # a model without a prior to sample from (a deterministic fusion)
                    drawn = None
                if drawn is not None:
                    self.writer.add_images("samples from the prior", drawn.float().clamp(0, 1).cpu(), step)

    # ------------------------------------------------------------------ at the end
    def on_end(self, trainer) -> None:
        model = trainer.model
        test = slice_inputs(self.data.inputs("test"), slice(0, EMBEDDED))
        with eval_mode(model), torch.inference_mode():
            codes = torch.cat([model.codes(b).float().cpu() for b in iterate_inputs(test, 2048)])
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


def _image_of(out) -> torch.Tensor | None:
    """The image part of a model's output: the tensor itself, or a mapping's "image" entry (None without)."""
    if isinstance(out, dict):
        out = out.get(IMAGE)
    if out is None or out.dim() != 4 or out.shape[1] not in (1, 3):
        return None
    return out
