"""What the explorer serves about one run: its predictor, test set, latent statistics and map, as JSON and PNGs.

A :class:`RunView` is built once when the server starts (the statistics and the 2-D map are read from the run
folder, or computed there once, see :func:`aelab.predict.ensure_latent_files`); requests only read it.

A multimodal run is shown through its image modality (the map is of the test images' codes, the sliders
decode images); with text it also turns words into images and any code into a word (flagging the words of a
text that training never showed), and with audio it draws each test recording as its MFCC picture, places
the recordings' codes on the map beside the images' and finds the recordings nearest any code in the shared
space (:class:`Recordings`).
"""
from __future__ import annotations

import base64
import dataclasses
import json
import math
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import Dataset, as_float
from ..data.multimodal import ALPHABET, decode_text
from ..errors import AelabError
from ..evaluation.chance import run_chance_warnings
from ..models.base import SPARSE, has
from ..predict import Predictor, Projection, ensure_latent_files
from ..registry import accepted_fields, model_class
from ..runfolder import CONFIG, load_run_data

SERVED_SUFFIXES = (".html", ".png", ".json", ".jsonl", ".csv", ".md")  # run files the page may link to
NEAREST = 5  # recordings listed beside a multimodal run's image
PLACE_NEIGHBOURS = 5  # on a t-SNE map, a recording is drawn at the mean position of the image codes nearest it
MFCC_REACH = 2.5  # standardised MFCC values drawn at full colour (beyond: clipped); 0 (the training mean) is white
WORD = re.compile(r"[A-Za-z]+|[0-9]+")  # the words of a text: runs of letters or of digits


def png_bytes(pixels: np.ndarray) -> bytes:
    """A PNG file of 8-bit pixels (H, W) (grey) or (H, W, 3) (RGB): the format's four required parts, no more."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    h, w = pixels.shape[:2]
    colour = 0 if pixels.ndim == 2 else 2

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + row.tobytes() for row in pixels)  # filter type 0 (none) before each row
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b""))


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def as_pixels(x: torch.Tensor, lo: float, hi: float) -> np.ndarray:
    """One sample in input space to 8-bit pixels: an image (C, H, W) with 1 or 3 channels as it is, a 2-D
    array as a grey image, anything else as a near-square grey grid; values from [lo, hi] to 0..255."""
    x = x.detach().float().cpu()
    if x.dim() == 3 and x.shape[0] in (1, 3):
        x = x[0] if x.shape[0] == 1 else x.permute(1, 2, 0)
    elif x.dim() != 2:
        flat = x.flatten()
        width = math.ceil(math.sqrt(len(flat)))
        x = torch.cat([flat, flat.new_full((width * width - len(flat),), lo)]).view(width, width)
        x = x[:math.ceil(len(flat) / width)]
    scaled = (x - lo) / max(hi - lo, 1e-12)
    return (scaled.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


BAR_WIDTH, BAR_HEIGHT = 6, 96  # a table row drawn as bars: pixels per feature, and the picture's height
INPUT_GREY, RECON_RED = (150, 183, 211), (192, 57, 43)


def bar_pixels(values: torch.Tensor, lo: float, hi: float, behind: torch.Tensor | None = None) -> np.ndarray:
    """A row of flat features (D,) as an RGB bar chart (BAR_HEIGHT, D * BAR_WIDTH, 3): one bar per feature from
    the zero line (or the bottom when lo >= 0), values from [lo, hi]; ``behind`` (the input, when drawing a
    reconstruction) is drawn first in light blue, ``values`` then in red as narrower bars in front."""
    d = len(values)
    image = np.full((BAR_HEIGHT, d * BAR_WIDTH, 3), 255, np.uint8)
    span = max(hi - min(lo, 0.0), 1e-12)
    row_of = lambda v: int(round((BAR_HEIGHT - 1) * (1 - (min(max(v, lo), hi) - min(lo, 0.0)) / span)))  # noqa: E731
    zero = row_of(0.0)
    layers = ([(behind, INPUT_GREY, 0)] if behind is not None else []) + \
             [(values, RECON_RED if behind is not None else INPUT_GREY, 1 if behind is not None else 0)]
    for row, colour, inset in layers:
        for j, v in enumerate(row.detach().float().cpu().tolist()):
            top, bottom = sorted((row_of(v), zero))
            image[top:bottom + 1, j * BAR_WIDTH + inset:(j + 1) * BAR_WIDTH - 1 - inset] = colour
    image[zero, :] = (90, 90, 90)
    return image


def mfcc_pixels(features: torch.Tensor, reach: float = MFCC_REACH) -> np.ndarray:
    """A recording's MFCC features (T frames, C coefficients), standardised, as an RGB heat-map (C, T, 3): time
    left to right, the first coefficient at the bottom; blue below the training mean, red above, white at it."""
    v = (features.detach().float().cpu().T.flip(0) / reach).clamp(-1, 1).cpu().numpy()  # (C, T) in [-1, 1]
    white, red, blue = np.array([255.0, 255, 255]), np.array([178.0, 24, 43]), np.array([33.0, 102, 172])
    t = np.abs(v)[..., None]
    pixels = (1 - t) * white + t * np.where(v[..., None] >= 0, red, blue)
    return pixels.round().astype(np.uint8)


def words_of(text: str) -> list[str]:
    """The words of ``text``: runs of letters or of digits ("7 (seven)" -> ["7", "seven"])."""
    return WORD.findall(text)


def find_runs(path: str | Path) -> list[Path]:
    """The run folders to serve: ``path`` itself when it is a run, else the run folders directly inside it."""
    path = Path(path)
    if not path.is_dir():
        raise AelabError(f"{path} is not a folder; give a run folder made by aelab train (or a folder of them)")
    if (path / CONFIG).is_file():
        return [path]
    runs = sorted(p for p in path.iterdir() if p.is_dir() and (p / CONFIG).is_file())
    if not runs:
        raise AelabError(f"{path} is not a run folder (no {CONFIG}) and holds none; give the folder aelab train wrote")
    return runs


def run_dataset(run_dir: Path, config, cache: dict, audio_data: str | None = None) -> Dataset:
    """The dataset a run was trained on, rebuilt from its config as its model family loads it
    (:func:`aelab.runfolder.load_run_data`; once per dataset, shared via ``cache``); a run whose family reads
    spoken digits reads them from ``audio_data`` when given (else where the config or the defaults say)."""
    name = config.dataset
    if audio_data is not None and "audio_data" in accepted_fields(config.model):
        config = dataclasses.replace(config, audio_data=str(audio_data))
    key = (model_class(config.model).load_data, name, config.data_dir, config.modalities, config.audio_data,
           config.seed, repr(config.data_options()), config.normal_classes)
    if key not in cache:
        cache[key] = load_run_data(config)
    return cache[key]


@dataclass
class Recordings:
    """A multimodal run's distinct test recordings: their MFCC features, their codes in the shared space (to find
    the ones nearest any code) and where they lie on the map. Recording ``i`` (its id in the API) is paired with
    test row ``rows[i]``; ``ids[i]`` is its index in the FSDD file (when the data says)."""

    codes: torch.Tensor  # (R, latent_dim)
    digits: np.ndarray  # (R,) int64, -1 when unknown
    rows: np.ndarray  # (R,) int64
    ids: np.ndarray | None  # (R,) int64
    features: torch.Tensor  # (R, T, C) standardised MFCCs, as the model reads them
    points: np.ndarray | None = None  # (R, 2) map positions (see place)
    placement: str = ""  # how the points were found: "projected" (a linear map) or "nearest images" (t-SNE)

    @classmethod
    def of(cls, predictor: Predictor, data: Dataset, labels: np.ndarray) -> "Recordings":
        audio = data.x_test["audio"]
        n = len(audio)
        pairing = (data.meta or {}).get("pairing", {}).get("test", {}).get("audio")
        if pairing is not None and len(pairing) == n:  # rows share recordings: one entry per recording
            ids, rows = np.unique(np.asarray(pairing, np.int64), return_index=True)
        else:
            _, rows = np.unique(audio.reshape(n, -1).cpu().numpy(), axis=0, return_index=True)
            ids = None
        rows = np.sort(rows) if ids is None else rows
        features = audio[torch.as_tensor(rows)].float().cpu()
        codes = predictor.encode(features, modality="audio")
        return cls(codes, labels[rows], rows.astype(np.int64), ids, features)

    def __len__(self) -> int:
        return len(self.rows)

    def place(self, projection: Projection, image_codes: torch.Tensor | None) -> None:
        """Put the recordings on the map of the image codes: a linear map projects their codes exactly; on a
        t-SNE map (no projection of new codes) each goes to the mean position of the ``PLACE_NEIGHBOURS`` mapped
        image codes nearest its code, the usual out-of-sample placement (``image_codes``: the test images' codes,
        needed only then)."""
        if projection.linear:
            axes = torch.as_tensor(projection.axes, dtype=torch.float32)  # (2, D)
            origin = torch.as_tensor(projection.origin, dtype=torch.float32)
            # the map's position -> code is origin + x a0 + y a1; least squares inverts it for any axes
            self.points = torch.linalg.lstsq(axes.T, (self.codes - origin).T).solution.T.cpu().numpy()
            self.placement = "projected"
            return
        mapped = image_codes[torch.as_tensor(projection.index)]
        k = min(PLACE_NEIGHBOURS, len(mapped))
        near = torch.cdist(self.codes, mapped).topk(k, largest=False).indices.cpu().numpy()  # (R, k)
        self.points = np.asarray(projection.points, np.float32)[near].mean(1)
        self.placement = "nearest images"

    def entry(self, i: int, distance: float | None = None) -> dict:
        """Recording ``i`` as the API lists it."""
        out = {"id": int(i), "digit": int(self.digits[i]), "row": int(self.rows[i]),
               "recording": int(self.ids[i]) if self.ids is not None else None}
        if distance is not None:
            out["distance"] = round(float(distance), 4)
        return out

    def nearest(self, z: torch.Tensor, k: int = NEAREST) -> list[dict]:
        """The ``k`` recordings whose codes are nearest ``z`` (latent_dim,), nearest first (Euclidean)."""
        distance = torch.cdist(z.reshape(1, -1).float(), self.codes)[0]
        order = torch.argsort(distance)[:k].tolist()
        return [self.entry(i, distance[i]) for i in order]


@dataclass
class RunView:
    """One run as the explorer sees it. ``x`` are the test inputs (as stored: uint8 images stay uint8)."""

    name: str
    path: Path
    predictor: Predictor
    x: torch.Tensor  # (N, *input_shape) test inputs
    labels: np.ndarray  # (N,) int64, -1 where the dataset has no labels
    classes: list[str] | None
    dataset: str
    stats: dict
    projection: Projection
    lo: float = 0.0  # input-space values drawn black ...
    hi: float = 1.0  # ... and white
    texts: list[str] | None = None  # a multimodal run with text: each test row's paired text
    recordings: Recordings | None = None  # a multimodal run with audio: its test recordings' codes
    vocabulary: frozenset[str] | None = None  # a multimodal run with text: the words of its training texts
    warnings: list[str] = dataclasses.field(default_factory=list)  # the run learned nothing: evaluation.chance.run_chance_warnings

    @classmethod
    def load(cls, run_dir: str | Path, name: str | None = None, data: Dataset | None = None, method: str = "tsne",
             device: str = "auto", cache: dict | None = None, log=None, audio_data: str | None = None) -> "RunView":
        run_dir = Path(run_dir)
        predictor = Predictor.from_run(run_dir, device=device)
        if data is None:
            data = run_dataset(run_dir, predictor.run.config, {} if cache is None else cache, audio_data)
        if sorted(data.modalities) != sorted(predictor.modalities):
            raise AelabError(f"the data given holds {', '.join(data.modalities)} but {run_dir}'s model reads "
                             f"{', '.join(predictor.modalities)}; give the dataset the run was trained on")
        test = data.inputs("test")
        x = test[predictor.modality].cpu()
        if tuple(x.shape[1:]) != predictor.input_shape:
            raise AelabError(f"the data given has inputs of shape {tuple(x.shape[1:])} but {run_dir}'s "
                             f"model reads {predictor.input_shape}; give the dataset the run was trained on")
        stats, projection = ensure_latent_files(predictor, data, method, log=log)
        n = len(x)
        labels = data.y_test.cpu().numpy().astype(np.int64) if data.y_test is not None else np.full(n, -1, np.int64)
        bounded = x.dtype == torch.uint8 or (float(x.min()) >= 0.0 and float(x.max()) <= 1.0)
        lo, hi = (0.0, 1.0) if bounded else (float(x.min()), float(x.max()))
        if not bounded and x.dim() == 2 and x.numel() > 1:  # a table's rows: a few extreme values would flatten the bars
            lo, hi = (float(v) for v in torch.quantile(x.float().flatten()[:1_000_000], torch.tensor([0.01, 0.99])))
        texts = recordings = vocabulary = None
        if "text" in predictor.modalities:
            texts = decode_text(test["text"])
            written = torch.unique(data.inputs("train")["text"], dim=0)  # a few dozen distinct texts
            vocabulary = frozenset(w for t in decode_text(written) for w in words_of(t))
        if "audio" in predictor.modalities and predictor.modality != "audio":
            recordings = Recordings.of(predictor, data, labels)
            recordings.place(projection, None if projection.linear else predictor.encode(x))
        return cls(name or run_dir.name, run_dir, predictor, x, labels, data.classes, data.name, stats, projection,
                   lo, hi, texts, recordings, vocabulary,
                   run_chance_warnings(predictor.run, data) if predictor.run is not None else [])

    # ------------------------------------------------------------------ answers
    def __post_init__(self):
        points = [{"x": round(float(px), 4), "y": round(float(py), 4), "label": int(self.labels[i]), "index": int(i)}
                  for (px, py), i in zip(self.projection.points, self.projection.index)]
        self.points_json = json.dumps({"points": points}, separators=(",", ":")).encode()
        self._image_cache: dict[int, bytes] = {}

    @property
    def count(self) -> int:
        return len(self.x)

    def summary(self) -> dict:
        p = self.predictor
        return {"name": self.name, "model": p.name, "dataset": self.dataset, "latent_dim": p.latent_dim}

    @property
    def has_text(self) -> bool:
        return self.texts is not None

    @property
    def has_audio(self) -> bool:
        return self.recordings is not None

    def multimodal_info(self) -> dict:
        """What the page needs to know of a multimodal run (None values for a one-modality run)."""
        p = self.predictor
        text = None
        if self.has_text:
            spec = p.specs["text"]
            text = {"max_length": int(spec.shape[0]), "alphabet": ALPHABET}
        return {"modalities": list(p.modalities) if len(p.modalities) > 1 else None, "map_modality": p.modality,
                "text": text, "recordings": len(self.recordings) if self.has_audio else None}

    def info(self, limits: dict) -> dict:
        p, proj, history = self.predictor, self.projection, self.predictor.run.history
        linear = {"origin": proj.origin.tolist(), "axes": proj.axes.tolist()} if proj.linear else {}
        return {**self.summary(), "run": self.name, "classes": self.classes, "input_shape": list(p.input_shape),
                "modality": p.modality, "can_sample": p.can_sample, "test_count": self.count,
                "epochs": len(history), "test_loss": history[-1].get("test_loss") if history else None,
                "device": str(p.device), "files": self.files(),
                "map": {"method": proj.method, "axis_labels": list(proj.axis_labels), "linear": proj.linear,
                        "points": len(proj.index), **linear},
                "stats": {k: self.stats[k] for k in ("mean", "std", "min", "max")},
                "flat": self.flat,  # a table's rows: the page draws inputs and outputs as bars
                "sparse": has(p.model, SPARSE),  # a sparse code: the page offers the item's active units as sliders
                "warnings": self.warnings, "limits": limits, **self.multimodal_info()}

    def label_name(self, label: int) -> str | None:
        if label < 0:
            return None
        return self.classes[label] if self.classes and label < len(self.classes) else str(label)

    @property
    def flat(self) -> bool:
        """A run on flat features (a table's rows): its inputs and outputs are drawn as bars, not pixels."""
        return self.x.dim() == 2

    def png(self, x: torch.Tensor, behind: torch.Tensor | None = None) -> bytes:
        """One input or output as a PNG: pixels for an image; bars for a row of features (with the input
        ``behind`` a reconstruction)."""
        if self.flat:
            return png_bytes(bar_pixels(x, self.lo, self.hi, behind))
        return png_bytes(as_pixels(x, self.lo, self.hi))

    def input_png(self, index: int) -> bytes:
        if index not in self._image_cache:
            self._image_cache[index] = self.png(as_float(self.x[index]))
        return self._image_cache[index]

    def item(self, index: int) -> dict:
        """Test item ``index``: its image, reconstruction, code and label; for a multimodal run also the word
        decoded from the image's code (and the item's own text) and the digits of the nearest test recordings."""
        z = self.predictor.encode(self.x[index])
        recon = self.predictor.decode(z)[0]
        label = int(self.labels[index])
        answer = {"index": index, "label": label, "class": self.label_name(label),
                  "image": data_url(self.input_png(index)),
                  "reconstruction": data_url(self.png(recon, as_float(self.x[index]) if self.flat else None)),
                  "z": z[0].tolist()}
        if self.has_text:
            answer.update(word=self.predictor.decode_text(z)[0], text=self.texts[index])
        if self.recordings is not None:
            answer["nearest_recordings"] = self.recordings.nearest(z[0])
        return answer

    def encode(self, index: int) -> list[float]:
        return self.predictor.encode(self.x[index])[0].tolist()

    def decode(self, z) -> list[str]:
        return [data_url(self.png(out)) for out in self.predictor.decode(torch.tensor(z, dtype=torch.float32))]

    def code_answer(self, z: list[float]) -> dict:
        """One code as the page shows it: its image; for a multimodal run also its word (with text) and the
        test recordings nearest it (with audio), so every panel follows the code on screen."""
        answer = {"image": self.decode([z])[0]}
        if self.has_text:
            answer["word"] = self.predictor.decode_text([z])[0]
        if self.has_audio:
            answer["nearest_recordings"] = self.recordings.nearest(torch.tensor(z, dtype=torch.float32))
        return answer

    def interpolate(self, a: int, b: int, steps: int) -> tuple[list[list[float]], list[str]]:
        za, zb = self.predictor.encode(self.x[[a, b]])
        codes = self.predictor.interpolate(za, zb, steps)
        return codes.tolist(), [data_url(self.png(out)) for out in self.predictor.decode(codes)]

    def from_text(self, text: str, n: int, seed: int | None) -> dict:
        """Images generated from ``text``: the decoding of its code, then of ``n - 1`` codes drawn from
        q(z | text); with the word the text decoder reads back from the first code."""
        codes = self.predictor.text_codes(text, n, seed)
        answer = {"text": text, "word": self.predictor.decode_text(codes[:1])[0], "z": codes.tolist(),
                  "images": [data_url(self.png(out)) for out in self.predictor.decode(codes)],
                  "unknown": self.unknown_words(text)}
        if self.has_audio:
            answer["nearest_recordings"] = self.recordings.nearest(codes[0])
        return answer

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` that no training text holds (in order, once each): the model still reads
        them, letter by letter, but has never seen them."""
        return list(dict.fromkeys(w for w in words_of(text) if w not in (self.vocabulary or ())))

    def recording(self, i: int) -> dict:
        """Test recording ``i``: its MFCC picture, the audio decoder's picture of its code, and what the code
        gives in the other modalities: the image (and the word, with text) decoded from it."""
        rec = self.recordings
        z = rec.codes[i:i + 1]
        answer = {**rec.entry(i), "z": z[0].tolist(), "mfcc": data_url(png_bytes(mfcc_pixels(rec.features[i]))),
                  "reconstruction": data_url(png_bytes(mfcc_pixels(self.predictor.decode(z, modality="audio")[0]))),
                  "image": data_url(self.png(self.predictor.decode(z)[0]))}
        if self.has_text:
            answer["word"] = self.predictor.decode_text(z)[0]
        return answer

    def recording_points(self) -> dict:
        """Every test recording with its map position."""
        rec = self.recordings
        return {"placement": rec.placement,
                "recordings": [{**rec.entry(i), "x": round(float(rec.points[i][0]), 4),
                                "y": round(float(rec.points[i][1]), 4)} for i in range(len(rec))]}

    def sample(self, n: int, seed: int | None) -> list[str]:
        return [data_url(self.png(out)) for out in self.predictor.sample(n, seed)]

    def files(self) -> list[str]:
        """The run's own files the page may fetch: plain files directly in the run folder, of a few kinds."""
        return sorted(p.name for p in self.path.iterdir()
                      if p.is_file() and not p.is_symlink() and p.suffix in SERVED_SUFFIXES)
