"""Likelihood bounds of variational models: the negative ELBO and the IWAE estimate of -log p(x), in nats.

A model is *variational* when it declares the VARIATIONAL capability: ``model.posterior(x)`` is an object with ``sample(n)``,
``log_prob(z)`` and ``kl()``, and the model has ``decode_logits(z)`` for z of shape (K, B, D) and
``log_likelihood(logits, x)`` giving log p(x|z) per sample (see :mod:`aelab.models.vae`). Its prior is
N(0, I) unless it has ``prior_log_prob(z)`` (a VAE's mog or VampPrior); the KL of :func:`neg_elbo` is in
closed form only for the N(0, I) prior (``prior_kind`` "normal" or absent).

Noise is drawn from torch's global generator inside ``torch.random.fork_rng`` after seeding it with
``seed``: results are reproducible, the caller's random state is left untouched, and any posterior
that implements ``sample`` works. Work is chunked over images and samples so that no decoder output
holds more than ``max_elements`` values, which bounds memory for K = 1000 on 10,000 images.
"""
from __future__ import annotations

import contextlib
import math

import torch
from tqdm.auto import tqdm

from ..data.batches import as_float
from ..models.base import VARIATIONAL, eval_mode, has, model_device
from ..models.vae import iwae_bound, standard_normal_log_prob

MAX_ELEMENTS = 1 << 24  # decoder outputs per chunk (64 MiB of float32; the BCE adds a few temporaries)


def is_variational(model) -> bool:
    """True for a model that declares the VARIATIONAL capability: ``posterior(x)`` (``sample``, ``log_prob``,
    ``kl``), ``decode_logits(z)`` for z of shape (K, B, D) and ``log_likelihood(logits, x)``."""
    return has(model, VARIATIONAL)


def iwae_from_log_weights(log_w: torch.Tensor) -> torch.Tensor:
    """The IWAE estimate of -log p(x) from K importance log-weights per image. log_w: (K, B) -> (B,).

    -(logsumexp_k log w_k - log K) (Burda, Grosse & Salakhutdinov 2016, eq. 8), computed with
    log-sum-exp so that weights of e^-100 do not underflow. With K = 1 it is -log w: the negative
    ELBO estimated on that one sample; it can only decrease, in expectation, as K grows.
    """
    return iwae_bound(log_w)


def prior_log_prob(model, z: torch.Tensor) -> torch.Tensor:
    """log p(z) under the model's prior: its ``prior_log_prob`` when it has one, else N(0, I). z: (..., D) -> (...)."""
    own = getattr(model, "prior_log_prob", None)
    return standard_normal_log_prob(z) if own is None else own(z)


def has_standard_prior(model) -> bool:
    """True when the model's prior is N(0, I), so that KL(q || p) has a closed form."""
    return getattr(model, "prior_kind", "normal") == "normal"


def log_importance_weights(model, x: torch.Tensor, q, z: torch.Tensor) -> torch.Tensor:
    """log w = log p(x|z) + log p(z) - log q(z|x), with the model's prior p(z) (:func:`prior_log_prob`).
    x: (B, ...), z: (K, B, D) -> (K, B)."""
    return model.log_likelihood(model.decode_logits(z), x) + prior_log_prob(model, z) - q.log_prob(z)


def neg_elbo(model, x: torch.Tensor, *, seed: int = 0, mc_kl: bool = False, max_elements: int = MAX_ELEMENTS,
             ) -> torch.Tensor:
    """Negative ELBO of each image in nats, with one posterior sample per image. x: (B, ...) -> (B,).

    -log p(x|z) + KL(q(z|x) || N(0, I)), z ~ q(z|x), the KL in closed form (Kingma & Welling 2014,
    eq. 10). With ``mc_kl=True``, and always for a prior other than N(0, I) (no closed form), the KL is
    estimated on the same z instead, log q(z|x) - log p(z): that is exactly :func:`iwae_nll` with K = 1 and
    the same seed (same draws, same chunks).
    """
    mc_kl = mc_kl or not has_standard_prior(model)
    out = torch.empty(len(x), dtype=torch.float64, device=x.device)
    with eval_mode(model), seeded(seed, x.device), torch.inference_mode():
        _, b_chunk = chunk_sizes(len(x), 1, _size(x), max_elements)
        for start in range(0, len(x), b_chunk):
            xb = as_float(x[start:start + b_chunk])
            q = model.posterior(xb)
            z = q.sample(1)  # (1, b, D)
            if mc_kl:
                value = -log_importance_weights(model, xb, q, z)[0]
            else:
                value = -model.log_likelihood(model.decode_logits(z), xb)[0] + q.kl()
            out[start:start + len(xb)] = value.double()
    return out


def iwae_nll(model, x: torch.Tensor, samples: int, *, seed: int = 0, max_elements: int = MAX_ELEMENTS,
             progress: bool = False) -> torch.Tensor:
    """Importance-weighted estimate of -log p(x) of each image in nats, with ``samples`` (K) draws.

    x: (B, ...) -> (B,). Batched over samples and images: each chunk decodes a (k, b, D) block of
    codes at once, and a running log-sum-exp over the sample chunks keeps memory at one block.
    An upper bound on the true -log p(x) in expectation that tightens as K grows (Burda et al. 2016).
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    k_chunk, b_chunk = chunk_sizes(len(x), samples, _size(x), max_elements)
    n_img = math.ceil(len(x) / b_chunk)
    n_smp = math.ceil(samples / k_chunk)
    out = torch.empty(len(x), dtype=torch.float64, device=x.device)
    bar = tqdm(total=n_img * n_smp, desc=f"IWAE bound, K={samples}", leave=False, dynamic_ncols=True,
               disable=None if progress else True)
    with eval_mode(model), seeded(seed, x.device), torch.inference_mode():
        for start in range(0, len(x), b_chunk):
            xb = as_float(x[start:start + b_chunk])
            q = model.posterior(xb)
            acc = torch.full((len(xb),), -math.inf, dtype=torch.float64, device=x.device)  # logsumexp so far
            for k0 in range(0, samples, k_chunk):
                k = min(k_chunk, samples - k0)
                log_w = log_importance_weights(model, xb, q, q.sample(k))  # (k, b)
                acc = torch.logaddexp(acc, torch.logsumexp(log_w.double(), dim=0))
                bar.update(1)
            out[start:start + len(xb)] = -(acc - math.log(samples))
    bar.close()
    return out


def chunk_sizes(n_images: int, samples: int, values_per_image: int, max_elements: int = MAX_ELEMENTS
                ) -> tuple[int, int]:
    """(samples per chunk, images per chunk) so that a chunk's decoder output holds at most
    ``max_elements`` values (at least one sample of one image). Samples are chunked first over
    blocks of up to 256 images, then images fill what is left."""
    per = max(1, values_per_image)
    k = max(1, min(samples, max_elements // (per * max(1, min(n_images, 256)))))
    b = max(1, min(n_images, max_elements // (per * k)))
    return k, b


def _size(x: torch.Tensor) -> int:
    return math.prod(x.shape[1:])


@contextlib.contextmanager
def seeded(seed: int, device: torch.device):
    """Seed torch's generators for the block and restore the caller's state afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
