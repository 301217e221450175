"""The training loops people write today, as the speed benchmark's baselines.

Each is what a PyTorch tutorial teaches: a per-sample ``Dataset`` whose ``__getitem__`` returns one
float image (as torchvision's ``ToTensor`` does), a ``DataLoader(batch_size=128, shuffle=True)``
collating 128 of them per step, ``torch.optim.Adam(model.parameters(), lr=1e-3)`` with its default
(per-parameter) implementation, and ``loss.item()`` each step for the running loss.

- ``dense``: 784-256-128-32 and back, ReLU, sigmoid output, ``nn.MSELoss`` (mean per pixel).
- ``vae``: pytorch/examples ``vae/main.py``: 784-400-20, summed BCE + KL, the loop and the test
  loop as written there (the test loss is the summed negative ELBO divided by the test set size).
- ``conv``: the convolutional autoencoder of aelab's ``conv`` model (Conv2d 1-32-64 stride 2, linear
  to 32 and back) written as plain modules, ``nn.MSELoss``.

The one difference from pytorch/examples: the images come from a tensor already in memory, not
from torchvision's PIL-per-sample path (``PIL.Image.fromarray`` then ``ToTensor`` for every image),
which makes the baseline faster than the original: that path alone took ~15 ms per batch of 128 here
against ~2.5 ms for this one, so the ratios reported against it are, if anything, conservative.

``iter_bare`` is the other end: the fastest eager PyTorch loop we know how to write for the same
model, with no framework at all: the training images as one float tensor on the device, a batch as
one gather of a random permutation, the loss in its cheapest form (logits and BCE-with-logits for the
VAE), fused Adam stepped without its per-step Python bookkeeping (aelab's ``LeanAdam``), bf16 autocast
on a GPU as aelab's step, nothing read back to the host. No evaluation, no metrics, no checkpoints: it bounds what any eager trainer, aelab
included, can reach on the machine, and its ratio to the baseline is the ceiling for the others.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader


class ImageDataset(torch.utils.data.Dataset):
    """One sample at a time: a (1, 28, 28) float image in [0, 1] and its label."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        self.images = images  # uint8 (N, 1, 28, 28), as the IDX files hold them
        self.labels = labels if labels is not None else torch.zeros(len(images), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i].float() / 255, self.labels[i]


class DenseAE(nn.Module):
    """784-256-128-32-128-256-784, ReLU, sigmoid output."""

    def __init__(self, latent_dim: int = 32):
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                                     nn.Linear(128, latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, 128), nn.ReLU(), nn.Linear(128, 256), nn.ReLU(),
                                     nn.Linear(256, 784), nn.Sigmoid())

    def forward(self, x):
        return self.decoder(self.encoder(x)).view_as(x)


class ConvAE(nn.Module):
    """Conv2d 1->32->64 (kernel 4, stride 2), linear to the code, and the mirror image back."""

    def __init__(self, latent_dim: int = 32):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 4, stride=2, padding=1), nn.ReLU(),  # (B, 32, 14, 14)
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),  # (B, 64, 7, 7)
            nn.Flatten(), nn.Linear(64 * 7 * 7, latent_dim))
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 64 * 7 * 7), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),  # (B, 32, 14, 14)
            nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1), nn.Sigmoid())  # (B, 1, 28, 28)

    def forward(self, x):
        return self.decoder(self.encoder(x))


class ExamplesVAE(nn.Module):
    """pytorch/examples vae/main.py, verbatim apart from the names."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def vae_loss(recon_x, x, mu, logvar):
    """Reconstruction + KL divergence summed over all elements and the batch (pytorch/examples;
    Kingma & Welling 2014, appendix B: -0.5 * sum(1 + log(sigma^2) - mu^2 - sigma^2))."""
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


BUILD = {"dense": DenseAE, "conv": ConvAE, "vae": ExamplesVAE}


class BareVAE(ExamplesVAE):
    """The pytorch/examples VAE returning its per-image loss in the cheapest form: one 400 -> 40 layer for
    (mu, logvar) instead of two, and BCE with logits (one fused kernel) instead of sigmoid + BCE."""

    def __init__(self):
        super().__init__()
        self.fc2 = nn.Linear(400, 40)
        del self.fc21, self.fc22

    def forward(self, x):
        x = x.view(-1, 784)
        mu, logvar = self.fc2(F.relu(self.fc1(x))).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        logits = self.fc4(F.relu(self.fc3(z)))
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return (bce + kld) / x.shape[0]

    def as_examples(self) -> ExamplesVAE:
        """The pytorch/examples model holding these weights (its two 400 -> 20 layers are halves of fc2)."""
        reference = ExamplesVAE().to(self.fc1.weight.device)
        for name in ("fc1", "fc3", "fc4"):
            getattr(reference, name).load_state_dict(getattr(self, name).state_dict())
        with torch.no_grad():
            for layer, weight, bias in zip((reference.fc21, reference.fc22), self.fc2.weight.chunk(2),
                                           self.fc2.bias.chunk(2)):
                layer.weight.copy_(weight)
                layer.bias.copy_(bias)
        return reference


def iter_bare(kind: str, data, epochs: int, device: torch.device, seed: int = 0):
    """The bare loop (module docstring) for ``kind``, yielding one record per epoch: the training seconds
    and the test metric after it (computed as ``test_metric`` does, outside the timed part)."""
    from aelab.data import as_float  # uint8 images to float32 in [0, 1], floats unchanged
    from aelab.training.optim import make_adam  # the fastest Adam step we have: fused, no per-step lists
    from aelab.training.trainer import autocast_context  # bf16 on a GPU that has it, as aelab's step runs

    torch.manual_seed(seed)
    model = (BareVAE() if kind == "vae" else BUILD[kind]()).to(device)
    if kind == "conv":  # oneDNN's and cuDNN's fastest layout for these convolutions
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_adam(model.parameters(), 1e-3, 0.0)
    x = as_float(data.x_train.to(device))
    if kind == "conv":
        x = x.contiguous(memory_format=torch.channels_last)
    test = DataLoader(ImageDataset(data.x_test.cpu()), batch_size=1024, shuffle=False)
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(x), device=device)
        t0 = time.perf_counter()
        for i in range(0, len(x), 128):
            xb = x[order[i:i + 128]]
            with autocast_context(device):
                loss = model(xb) if kind == "vae" else F.mse_loss(model(xb).float(), xb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        # the test metric through the baseline's own maths (for the VAE: the examples' model with these weights)
        metric = test_metric(kind, model.as_examples() if kind == "vae" else model, test, device)
        yield {"epoch": epoch, "seconds": seconds, "test_metric": metric}


def train_epoch(kind: str, model, loader, optimizer, device) -> float:
    """One epoch of the tutorial loop; returns the mean training loss (per sample for the VAE, as printed
    by pytorch/examples; the mean of the batch means for the others)."""
    model.train()
    total = 0.0
    for data, _ in loader:
        data = data.to(device)
        optimizer.zero_grad()
        if kind == "vae":
            recon, mu, logvar = model(data)
            loss = vae_loss(recon, data, mu, logvar)
        else:
            loss = F.mse_loss(model(data), data)
        loss.backward()
        total += loss.item()
        optimizer.step()
    return total / (len(loader.dataset) if kind == "vae" else len(loader))


def test_metric(kind: str, model, loader, device) -> float:
    """Test loss as the tutorial computes it: summed negative ELBO / N (vae), mean MSE per pixel (others)."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for data, _ in loader:
            data = data.to(device)
            if kind == "vae":
                recon, mu, logvar = model(data)
                total += vae_loss(recon, data, mu, logvar).item()
            else:
                total += F.mse_loss(model(data), data, reduction="sum").item() / data[0].numel()
            count += len(data)
    return total / count


def iter_baseline(kind: str, data, epochs: int, device: torch.device, seed: int = 0):
    """Train the tutorial ``kind`` on ``data`` (an aelab Dataset) for ``epochs``, yielding one record per
    epoch: the training seconds (loader included, test excluded) and the test metric after it."""
    torch.manual_seed(seed)
    model = BUILD[kind]().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    # on a GPU, pytorch/examples adds {'num_workers': 1, 'pin_memory': True}; on a CPU, nothing
    extra = {"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}
    train_loader = DataLoader(ImageDataset(data.x_train.cpu()), batch_size=128, shuffle=True, **extra)
    test_loader = DataLoader(ImageDataset(data.x_test.cpu()), batch_size=128, shuffle=False, **extra)
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        train_loss = train_epoch(kind, model, train_loader, optimizer, device)
        seconds = time.perf_counter() - t0  # loss.item() each step has already synchronised a GPU
        metric = test_metric(kind, model, test_loader, device)
        yield {"epoch": epoch, "seconds": seconds, "train_loss": train_loss, "test_metric": metric}
