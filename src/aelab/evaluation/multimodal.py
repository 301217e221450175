"""How well one latent space joins image, sound and text: cross-modal retrieval, coherence, reconstruction.

    from aelab.evaluation.multimodal import evaluate_multimodal
    metrics = evaluate_multimodal(model, data)   # data from aelab.data.multimodal.load_multimodal

- ``retrieval["a->b"]``: the test items of ``a`` query the test items of ``b``, ranked by Euclidean
  distance between codes (``model.encode({a: x})`` against ``model.encode({b: x})``); a hit is an item of
  the same digit. Recall@k and mean average precision (:func:`retrieval_metrics`).
- ``coherence["a->b"]``: decode the code of each test item of ``a`` into ``b`` and classify the result
  with an oracle trained on ``b`` alone; the fraction classified as the source's digit (the coherence
  of Shi et al. 2019, "Variational Mixture-of-Experts Autoencoders for Multi-Modal Deep Generative
  Models", sec. 4). ``"joint->b"`` decodes the code of every test row from all its modalities.
- ``oracle_accuracy[m]``: each oracle's own accuracy on the test items of ``m``; coherence cannot be
  read above it. Image: a small CNN; audio: a 1-D CNN over the padded MFCC frames; text: a rule,
  not a learned model (:func:`classify_text`). Learned oracles are trained once per training set and
  cached in ``cache_dir()/oracles/`` (weights only).
- ``reconstruction[m]``: ``m`` decoded from its own code and from the joint code (``*_joint``):
  image and audio mean squared error per value, text character accuracy and exact-match rate.
- ``probes[m]``: linear-probe and kNN accuracy of the code from ``m`` alone and from all (``joint``).

A test *item* is a distinct image, recording or text form: rows repeat recordings and forms (pairing
cycles them), and each is counted once, so 1,000 test images face 600 recordings and 20 held-out forms.
"""
from __future__ import annotations

import hashlib
import logging
import time

import numpy as np
import torch
from torch import nn

from ..data.batches import as_float
from ..data.dataset import Dataset
from ..data.datasets import cache_dir
from ..data.multimodal import DIGIT_WORDS, decode_text
from ..device import INFERENCE_BATCH
from ..errors import AelabError
from ..io import atomic_torch_save, load_checkpoint
from ..models.base import eval_mode, model_device
from .probes import MAX_TRAIN, probe_accuracies, stratified_subset

log = logging.getLogger(__name__)

RANK_BLOCK = 2_000_000  # query x gallery distances held at once by retrieval_metrics
ORACLE_VERSION = 2  # part of every oracle's cache key: bump when an architecture or its training changes
KS = (1, 5, 10)


# ---------------------------------------------------------------------------------------------- metrics
def retrieval_metrics(query_codes, query_labels, gallery_codes, gallery_labels, ks=KS) -> dict:
    """Class-level retrieval: for each query, rank the gallery by Euclidean distance.

    query_codes (Q, D), query_labels (Q,), gallery_codes (G, D), gallery_labels (G,); tensors or arrays.
    A gallery item is relevant to a query when it has the query's label. Returns ``recall@k`` for k
    in ``ks`` (the fraction of queries with at least one relevant item among their k nearest: the
    usual definition for class-level retrieval, not the fraction of all relevant items found) and
    ``map``: the mean over queries of average precision over the full ranking,
    AP = (1 / R) * sum over relevant ranks r of (relevant items in the top r) / r, with R the number of
    relevant items (AP = 0 for a query with none). Ties in distance keep gallery order. Queries are
    ranked in blocks of ``RANK_BLOCK`` distances, so 10,000 x 10,000 needs no large matrix.
    """
    q = torch.as_tensor(query_codes).float().flatten(1)
    g = torch.as_tensor(gallery_codes).float().flatten(1).to(q.device)
    ql = torch.as_tensor(query_labels).reshape(-1).to(q.device)
    gl = torch.as_tensor(gallery_labels).reshape(-1).to(q.device)
    if len(q) != len(ql) or len(g) != len(gl) or len(q) == 0 or len(g) == 0 or q.shape[1] != g.shape[1]:
        raise AelabError(f"retrieval needs non-empty codes with one label each and the same width: queries "
                         f"{tuple(q.shape)} with {len(ql)} labels, gallery {tuple(g.shape)} with {len(gl)}")
    hits = {k: 0.0 for k in ks}
    ap_sum = 0.0
    ranks = torch.arange(1, len(g) + 1, device=q.device, dtype=torch.float32)  # (G,)
    block = max(1, RANK_BLOCK // len(g))
    for s in range(0, len(q), block):
        d = torch.cdist(q[s:s + block], g)  # (b, G)
        order = torch.sort(d, dim=1, stable=True).indices  # (b, G) nearest first
        rel = gl[order] == ql[s:s + block, None]  # (b, G) relevant at each rank
        for k in ks:
            hits[k] += rel[:, :k].any(1).sum().item()
        relf = rel.float()
        precision = relf.cumsum(1) / ranks  # (b, G) precision at each rank
        n_rel = relf.sum(1)
        ap_sum += ((precision * relf).sum(1) / n_rel.clamp(min=1)).sum().item()
    out = {f"recall@{k}": hits[k] / len(q) for k in ks}
    out["map"] = ap_sum / len(q)
    return out


def coherence(predicted_labels, source_labels) -> float:
    """Fraction of predictions (N,) equal to the source's label (N,); a prediction of -1 (unreadable) is wrong."""
    p = torch.as_tensor(predicted_labels).reshape(-1).cpu()
    y = torch.as_tensor(source_labels).reshape(-1).cpu()
    if len(p) != len(y) or len(p) == 0:
        raise AelabError(f"coherence needs one prediction per source label, got {len(p)} and {len(y)}")
    return float((p == y).float().mean())


def classify_text(texts) -> torch.Tensor:
    """The text oracle, a rule (no learning): the digit a string names, int64 (N,).

    A string names digit d when it contains d's word (any case) or numeral as a substring; it is
    read as d when it names exactly one digit, else -1 (nothing or two digits: unreadable).
    Every training and held-out form reads correctly; so do garbled ones like "thseven".
    """
    out = []
    for s in texts:
        low = s.lower()
        found = {d for d in range(10) if DIGIT_WORDS[d] in low or str(d) in s}
        out.append(found.pop() if len(found) == 1 else -1)
    return torch.tensor(out, dtype=torch.int64)


# ---------------------------------------------------------------------------------------------- oracles
class ImageOracle(nn.Module):
    """(B, 1, 28, 28) in [0, 1] -> (B, 10) logits: two 3x3 conv + max-pool stages, linear."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 16, 14, 14)
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 7, 7)
            nn.Flatten(), nn.Linear(32 * 7 * 7, 10))

    def forward(self, x):
        return self.net(x)


class AudioOracle(nn.Module):
    """(B, T, 13) standardised MFCC frames -> (B, 10) logits: two 1-D convolutions over time, max over time."""

    def __init__(self, coefficients: int = 13, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(coefficients, width, 5, padding=2), nn.ReLU(),  # (B, width, T)
            nn.Conv1d(width, width, 5, padding=2), nn.ReLU(),  # (B, width, T)
            nn.AdaptiveMaxPool1d(1), nn.Flatten(), nn.Linear(width, 10))

    def forward(self, x):
        return self.net(x.transpose(1, 2))  # (B, 13, T): coefficients are channels


ORACLES = {"image": ImageOracle, "audio": AudioOracle}
# samples seen in training (epochs = this / training items, at least MIN_EPOCHS); what each judge reaches with
# them is measured in benchmarks/README.md (Results, Multimodal)
TRAIN_SAMPLES = {"image": 40_000, "audio": 50_000}
MIN_EPOCHS = {"image": 2, "audio": 20}
ORACLE_LR = {"image": 1e-2, "audio": 2e-3}  # the peak of a one-cycle schedule


class Oracle:
    """A classifier of one modality trained on that modality alone: ``predict(x) -> int64 (B,)``."""

    def __init__(self, modality: str, net: nn.Module | None, accuracy: float, seconds: float, cached: bool):
        self.modality, self.net, self.accuracy, self.seconds, self.cached = modality, net, accuracy, seconds, cached

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted digits (B,): images (B, 1, 28, 28) in [0, 1], audio (B, T, 13), text ids (B, L)
        or logits (B, L, V)."""
        if self.modality == "text":
            return classify_text(decode_text(to_ids(x)))
        device = next(self.net.parameters()).device
        with eval_mode(self.net):
            return torch.cat([self.net(as_float(x[s:s + INFERENCE_BATCH]).to(device)).argmax(1).cpu()
                              for s in range(0, len(x), INFERENCE_BATCH)])


def train_classifier(net: nn.Module, x, y, modality: str, seed: int = 0, batch_size: int = 128,
                     train_samples: int | None = None) -> nn.Module:
    """Fit ``net`` to (x, y) with Adam and cross-entropy, deterministic under ``seed``, for ``train_samples``
    samples (default ``TRAIN_SAMPLES[modality]``; at least ``MIN_EPOCHS`` epochs); returns ``net``."""
    device = next(net.parameters()).device
    samples = TRAIN_SAMPLES[modality] if train_samples is None else int(train_samples)
    epochs = max(MIN_EPOCHS[modality] if train_samples is None else 1, -(-samples // len(x)))
    opt = torch.optim.Adam(net.parameters(), lr=ORACLE_LR[modality])
    steps = epochs * -(-len(x) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=ORACLE_LR[modality], total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x), batch_size):
            idx = order[s:s + batch_size]
            loss = nn.functional.cross_entropy(net(as_float(x[idx]).to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    return net


def oracle_key(data: Dataset, modality: str, x: torch.Tensor, y: torch.Tensor, seed: int,
               train_samples: int | None = None) -> str:
    """Cache key: modality, sample shape, and a digest of the training items and labels, the seed and the training
    length (not the dataset's name: the FSDD recordings paired with mnist5k or with MNIST are the same items)."""
    h = hashlib.sha1()
    for t in (x, y):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().cpu().numpy().tobytes())
    h.update(f"v{ORACLE_VERSION}-seed{seed}-samples{train_samples}".encode())
    shape = "x".join(str(s) for s in x.shape[1:])
    return f"{modality}-{shape}-{h.hexdigest()[:16]}"  # no dataset name: the same recordings share one oracle


def get_oracle(modality: str, data: Dataset, seed: int = 0, device: torch.device | str = "cpu",
               train_samples: int | None = None) -> Oracle:
    """The oracle of ``modality``, trained on the train items of ``data`` (loaded from the cache when
    the same training items were seen before) and scored on its test items. ``train_samples``: how many
    samples its training sees (default :data:`TRAIN_SAMPLES`; fewer for a quick check)."""
    if modality == "text":
        rows = item_rows(data, "test", "text")
        pred = classify_text(decode_text(data.x_test["text"][rows]))
        return Oracle("text", None, coherence(pred, data.y_test[rows]), 0.0, cached=False)
    if modality not in ORACLES:
        raise AelabError(f"no oracle for the modality '{modality}'; oracles exist for image, audio and text")
    tr, te = item_rows(data, "train", modality), item_rows(data, "test", modality)
    x, y = data.x_train[modality][tr], data.y_train[tr]
    key = oracle_key(data, modality, x, y, seed, train_samples)
    path = cache_dir() / "oracles" / f"{key}.pt"
    net = ORACLES[modality]().to(device)
    if path.is_file():
        try:
            state = load_checkpoint(path)
            net.load_state_dict(state["state_dict"])
            net.eval()
            return Oracle(modality, net, float(state["accuracy"]), float(state["seconds"]), cached=True)
        except (AelabError, KeyError, RuntimeError) as exc:
            log.warning("oracle cache %s unusable (%s); training it again", path, exc)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ORACLES[modality]().to(device)
        train_classifier(net, x, y, modality, seed, train_samples=train_samples)
    seconds = time.perf_counter() - t0
    oracle = Oracle(modality, net, 0.0, seconds, cached=False)
    oracle.accuracy = coherence(oracle.predict(data.x_test[modality][te]), data.y_test[te])
    log.info("trained the %s oracle in %.1f s: test accuracy %.4f", modality, seconds, oracle.accuracy)
    try:
        atomic_torch_save({"state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
                           "accuracy": oracle.accuracy, "seconds": seconds, "key": key, "train_items": len(x)}, path)
    except AelabError as exc:  # a read-only cache costs a retraining next time, nothing else
        log.warning("could not cache the %s oracle: %s", modality, exc)
    return oracle


# ---------------------------------------------------------------------------------------------- items
def item_rows(data: Dataset, split: str, modality: str) -> torch.Tensor:
    """Row indices (sorted) of the distinct items of ``modality`` in ``split``: every row for images, the
    first row of each recording or text form otherwise (from ``meta["pairing"]``, else by content)."""
    x = getattr(data, f"x_{split}")[modality]
    pairing = data.meta.get("pairing", {}).get(split, {})
    if modality == "image":
        return torch.arange(len(x))
    if modality in pairing:
        labels = getattr(data, f"y_{split}").cpu().numpy() if modality == "text" else 0
        ids = np.asarray(pairing[modality]) * 10 + labels  # a text form is its index and its digit
    else:
        ids = torch.unique(x.flatten(1), dim=0, return_inverse=True)[1].cpu().numpy()
    return torch.as_tensor(np.sort(np.unique(ids, return_index=True)[1]))


def to_ids(text: torch.Tensor) -> torch.Tensor:
    """Text outputs as ids (B, L): logits or probabilities (B, L, V) by argmax, ids as they are."""
    return text.argmax(-1) if text.ndim == 3 else text.long()


@torch.inference_mode()
def encode(model, batch: dict) -> torch.Tensor:
    """``model.encode`` of a dict of row-aligned tensors, in batches on the model's device: (N, D) on the CPU."""
    device = model_device(model)
    n = len(next(iter(batch.values())))
    parts = []
    for s in range(0, n, INFERENCE_BATCH):
        rows = {m: as_float(x[s:s + INFERENCE_BATCH]).to(device) for m, x in batch.items()}
        parts.append(model.encode(rows).float().cpu())
    return torch.cat(parts)


@torch.inference_mode()
def decode(model, z: torch.Tensor, modality: str) -> torch.Tensor:
    """``model.decode(z, modality)`` in batches: image (N, 1, 28, 28), audio (N, T, 13), text ids (N, L)."""
    device = model_device(model)
    outs = []
    for s in range(0, len(z), INFERENCE_BATCH):
        out = model.decode(z[s:s + INFERENCE_BATCH].to(device), modality)
        outs.append((to_ids(out) if modality == "text" else out.float()).cpu())
    return torch.cat(outs)


def reconstruction_error(modality: str, output: torch.Tensor, target: torch.Tensor) -> dict:
    """image/audio: ``mse`` per value of output vs target (N, ...); text: ``char_accuracy`` over all L
    positions (padding included) and ``exact`` (the whole string right), of ids (N, L)."""
    if modality == "text":
        same = output == target
        return {"char_accuracy": float(same.float().mean()), "exact": float(same.all(1).float().mean())}
    return {"mse": float((output - as_float(target)).pow(2).mean())}


# ---------------------------------------------------------------------------------------------- all
def evaluate_multimodal(model, data: Dataset, seed: int = 0, probes: bool = True, oracles: dict | None = None) -> dict:
    """Every multimodal metric of ``model`` on ``data``'s test set (see the module docstring).

    ``model`` follows the batch contract: ``encode({m: x, ...}) -> (B, D)`` from any subset, ``decode(z, m)``
    the output of modality ``m``. ``oracles``: ``{modality: Oracle}`` to judge coherence with (default: :func:`get_oracle`,
    trained once per training set and cached). Returns ``retrieval``, ``coherence``, ``oracle_accuracy``,
    ``oracle_seconds``, ``reconstruction``, ``probes`` (unless ``probes=False``), ``test_items`` and ``seconds``.
    """
    t0 = time.perf_counter()
    names = [m for m in ("image", "audio", "text") if m in data.x_test]
    if len(names) < 2:
        raise AelabError(f"multimodal evaluation needs a dataset with two or more modalities, got {names}")
    device = model_device(model)
    rows = {m: item_rows(data, "test", m) for m in names}
    labels = {m: data.y_test[rows[m]] for m in names}
    with eval_mode(model):
        codes = {m: encode(model, {m: data.x_test[m][rows[m]]}) for m in names}
        joint = encode(model, data.x_test)
        given = dict(oracles or {})
        oracles = {m: given[m] if m in given else get_oracle(m, data, seed, device) for m in names}
        result = {"retrieval": {}, "coherence": {}, "reconstruction": {},
                  "test_items": {m: len(r) for m, r in rows.items()}}
        for a in names:
            for b in names:
                if a != b:
                    result["retrieval"][f"{a}->{b}"] = retrieval_metrics(codes[a], labels[a], codes[b], labels[b])
                    translated = decode(model, codes[a], b)  # a's test items decoded into b
                    result["coherence"][f"{a}->{b}"] = coherence(oracles[b].predict(translated), labels[a])
        for b in names:
            out = decode(model, joint, b)
            result["coherence"][f"joint->{b}"] = coherence(oracles[b].predict(out), data.y_test)
            joint_err = reconstruction_error(b, out, data.x_test[b])
            own = reconstruction_error(b, decode(model, codes[b], b), data.x_test[b][rows[b]])
            result["reconstruction"][b] = {**own, **{f"{k}_joint": v for k, v in joint_err.items()}}
        result["oracle_accuracy"] = {m: o.accuracy for m, o in oracles.items()}
        result["oracle_seconds"] = {m: round(o.seconds, 2) for m, o in oracles.items()}
        if probes:
            result["probes"] = code_probes(model, data, codes, joint, labels, seed)
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def code_probes(model, data: Dataset, test_codes: dict, test_joint: torch.Tensor, test_labels: dict, seed: int) -> dict:
    """Linear-probe and kNN accuracy of the code from each modality alone and from all (``joint``),
    fitted on at most ``MAX_TRAIN`` train rows (a seeded stratified sample) and scored on the test items."""
    keep = torch.as_tensor(stratified_subset(data.y_train.cpu().numpy(), MAX_TRAIN, seed))
    y = data.y_train[keep]
    out = {}
    for m, z in test_codes.items():
        train_codes = encode(model, {m: data.x_train[m][keep]})
        out[m] = probe_accuracies(train_codes, y, z, test_labels[m], seed=seed, num_classes=10)
    train_joint = encode(model, {m: x[keep] for m, x in data.x_train.items()})
    out["joint"] = probe_accuracies(train_joint, y, test_joint, data.y_test, seed=seed, num_classes=10)
    return out
