"""The device paths, checked without a GPU (issue 17, item 5).

A tensor in accelerator memory cannot become a numpy array: ``t.numpy()`` and ``np.asarray(t)`` raise on a
CUDA tensor ("can't convert cuda:0 device type tensor to numpy"), so every such read goes through ``.cpu()``
(free for a tensor already on the CPU: it returns the tensor itself). Two checks, neither needing a GPU:

- by reading: an ``ast`` walk over ``src/aelab`` finds every ``.numpy()`` whose receiver does not go through
  ``.cpu()`` (or ``.to("cpu")``) in the same expression, and every ``np.asarray``/``np.array`` of an expression
  that is visibly a tensor (a ``torch.`` call or a tensor-only method) without it. A call that is CPU by a line
  just above it is in :data:`KNOWN_CPU`, with the reason; an entry that no longer matches fails too.
- by running: :class:`OnDevice` is a CPU tensor that behaves as one in accelerator memory where it matters here:
  ``.numpy()``/``np.asarray`` raise, ``.cpu()`` gives a plain tensor back, every other operation keeps it "on
  the device". The evaluation and inference functions get data and codes made of it.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import aelab
from aelab.data import Dataset
from aelab.data.multimodal import DIGIT_WORDS, encode_text, modality_specs
from aelab.evaluation import evaluate_model, multimodal as ev
from aelab.evaluation.metrics import sparsity_summary
from aelab.evaluation.probes import probe_accuracies, stratified_subset
from aelab.models.multimodal import MultimodalAE
from aelab.predict import project_codes

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "aelab"

# (file under src/aelab, the receiver of .numpy() or the argument of np.asarray, as written) -> why it is a
# CPU tensor. Only for a value made CPU a line or two above, in the same function; everything else gets .cpu().
KNOWN_CPU = {
    ("web/views.py", "(scaled.clamp(0, 1) * 255).round().to(torch.uint8)"):
        "png_array: x = x.detach().float().cpu() at the top of the function, scaled is made from it",
    ("sklearn.py", "torch.cat(parts).double()"):
        "inverse_transform: every part is model.decode(...).cpu()",
    ("sklearn.py", "torch.cat(codes)"):
        "_codes: every part is model.codes(...).flatten(1).cpu()",
    ("viz/units.py", "(f[:, 0] if f.ndim == 4 else f)[units]"):
        "_unit_tiles: f = features.detach().float().cpu() on the line above",
    ("viz/figures.py", "x.clamp(0, 1)"):
        "as_images: x = x.detach().float().cpu() two lines above",
}
# methods that only a torch tensor has: np.asarray(<...>.detach()) is np.asarray of a tensor
TENSOR_ONLY_METHODS = {"detach", "cuda", "contiguous", "float", "double", "long", "half", "bfloat16", "to"}


# ---------------------------------------------------------------------------------------------- the check
def _is_cpu_call(node: ast.AST) -> bool:
    """``X.cpu()`` or ``X.to("cpu")`` / ``X.to(device="cpu")``."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return False
    if node.func.attr == "cpu":
        return True
    values = [*node.args, *(k.value for k in node.keywords if k.arg == "device")]
    return node.func.attr == "to" and any(isinstance(v, ast.Constant) and v.value == "cpu" for v in values)


def _call_of(node: ast.AST, *methods: str) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in methods


def goes_through_cpu(node: ast.AST) -> bool:
    """Whether the value of the expression ``node`` passed through ``.cpu()`` on its way: followed down its
    chain of calls, attributes and subscripts (``x.cpu()[rows].float()`` does), both arms of a conditional."""
    while True:
        if _is_cpu_call(node):
            return True
        if isinstance(node, ast.IfExp):
            return goes_through_cpu(node.body) and goes_through_cpu(node.orelse)
        if isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        else:
            return False


def visibly_a_tensor(node: ast.AST) -> bool:
    """Whether the chain of ``node`` holds a ``torch.`` call or a tensor-only method (before any ``.cpu()``)."""
    while True:
        if _is_cpu_call(node) or _call_of(node, "numpy", "tolist", "item"):  # ends on the CPU or off tensors
            return False
        if isinstance(node, ast.IfExp):
            return visibly_a_tensor(node.body) or visibly_a_tensor(node.orelse)
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "torch":
                return True
            if isinstance(func, ast.Attribute) and func.attr in TENSOR_ONLY_METHODS:
                return True
            node = func
        elif isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        else:
            return False


def numpy_reads(source: str) -> list[tuple[int, str, str]]:
    """(line, receiver as written, the whole call) of every read into numpy in ``source`` that skips ``.cpu()``:
    ``X.numpy()``, and ``np.asarray(X)`` / ``np.array(X)`` where X is visibly a tensor."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        func = node.func
        if func.attr == "numpy" and not node.args:
            value = func.value
            if not goes_through_cpu(value):
                found.append((node.lineno, ast.get_source_segment(source, value), ast.get_source_segment(source, node)))
        elif (func.attr in ("asarray", "array") and isinstance(func.value, ast.Name) and func.value.id == "np"
              and node.args and visibly_a_tensor(node.args[0]) and not goes_through_cpu(node.args[0])):
            found.append((node.lineno, ast.get_source_segment(source, node.args[0]),
                          ast.get_source_segment(source, node)))
    return found


def package_numpy_reads() -> dict[tuple[str, str], str]:
    """Every read into numpy without ``.cpu()`` in src/aelab: (file, receiver) -> "line: the call"."""
    reads = {}
    for path in sorted(SRC.rglob("*.py")):
        for line, receiver, call in numpy_reads(path.read_text()):
            reads[(path.relative_to(SRC).as_posix(), receiver)] = f"{line}: {call}"
    return reads


@pytest.mark.parametrize("source, flagged", [
    ("x.numpy()", ["x"]),
    ("x.detach().float().numpy()", ["x.detach().float()"]),
    ("x.cpu().numpy()", []),
    ("x.detach().cpu().numpy()", []),
    ("x.cpu()[rows].numpy()", []),
    ("x.to('cpu').numpy()", []),
    ("x.to(device='cpu').numpy()", []),
    ("x.to(torch.uint8).numpy()", ["x.to(torch.uint8)"]),
    ("(a if c else b.cpu()).numpy()", ["a if c else b.cpu()"]),
    ("(a.cpu() if c else b.cpu()).numpy()", []),
    ("torch.unique(x, return_inverse=True)[1].numpy()", ["torch.unique(x, return_inverse=True)[1]"]),
    ("np.asarray(t.detach())", ["t.detach()"]),
    ("np.asarray(torch.as_tensor(c))", ["torch.as_tensor(c)"]),
    ("np.asarray(torch.as_tensor(c).numpy())", ["torch.as_tensor(c)"]),  # one finding: the .numpy()
    ("np.asarray(t.detach().cpu())", []),
    ("np.asarray(ids.detach().cpu() if is_tensor else ids)", []),
    ("np.asarray(units)", []),  # not visibly a tensor: the running check below covers what reading cannot
    ("np.asarray(pairing[m]) * 10", []),
])
def test_the_check_finds_numpy_reads_that_skip_cpu(source, flagged):
    assert [receiver for _, receiver, _ in numpy_reads(source)] == flagged


def test_no_tensor_is_read_into_numpy_without_cpu():
    """Every ``.numpy()`` (and ``np.asarray`` of a visible tensor) in src/aelab goes through ``.cpu()``, or is
    of a value made on the CPU just above it (:data:`KNOWN_CPU`, with the reason)."""
    unexplained = {key: where for key, where in package_numpy_reads().items() if key not in KNOWN_CPU}
    assert not unexplained, "reads into numpy without .cpu() (write .cpu() after the tensor):\n" + "\n".join(
        f"src/aelab/{path}:{where}" for (path, _), where in sorted(unexplained.items(), key=_by_file_and_line))


def _by_file_and_line(item) -> tuple[str, int]:
    (path, _), where = item
    return path, int(where.split(":", 1)[0])


def test_every_known_cpu_entry_still_matches_a_line():
    stale = set(KNOWN_CPU) - set(package_numpy_reads())
    assert not stale, f"entries of KNOWN_CPU that match no line any more (remove them): {sorted(stale)}"


# ---------------------------------------------------------------------------------------------- by running
class OnDevice(torch.Tensor):
    """A CPU tensor that stands for one in accelerator memory: reading it into numpy raises as it would on a
    GPU, ``.cpu()`` and ``.to("cpu")`` give a plain tensor back, and any other operation keeps it OnDevice,
    ``.to(model_device(model))`` included: in this emulation the model is on "the device" too, so moving data
    to it keeps the data there (its ``.device`` says cpu, which a ``torch.device`` here stands for)."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.numpy, torch.Tensor.__array__):
            raise TypeError("can't convert an on-device tensor to numpy; use Tensor.cpu() to copy the tensor to "
                            "host memory first (as torch says for a CUDA tensor)")
        if func is torch.Tensor.cpu or (func is torch.Tensor.to and _to_cpu(args, kwargs)):
            with torch._C.DisableTorchFunctionSubclass():
                out = func(*args, **kwargs)
            return out.as_subclass(torch.Tensor)
        return super().__torch_function__(func, types, args, kwargs)


def _to_cpu(args, kwargs) -> bool:
    """Whether a ``.to(...)`` call names the host as a string ("cpu"), the way code reads a tensor back; a
    ``torch.device`` is the model's device, "the device" of this emulation."""
    target = kwargs.get("device", args[1] if len(args) > 1 else None)
    return isinstance(target, str) and torch.device(target).type == "cpu"


def on_device(t: torch.Tensor) -> OnDevice:
    return t.as_subclass(OnDevice)


def test_on_device_tensors_refuse_numpy_until_moved_to_the_cpu():
    t = on_device(torch.arange(6).float())
    with pytest.raises(TypeError, match="Tensor.cpu"):
        t.numpy()
    with pytest.raises(TypeError, match="Tensor.cpu"):
        np.asarray(t * 2)  # still on the device after an operation
    assert type(t[1:].cpu()) is torch.Tensor and t.cpu().numpy().tolist() == [0, 1, 2, 3, 4, 5]
    assert type(t.to("cpu")) is torch.Tensor and type(t.to(torch.float64)) is OnDevice
    assert type(t.to(torch.device("cpu"))) is OnDevice  # to the model's device: still on the device


def test_probes_and_sparsity_read_codes_and_labels_on_the_device():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    codes = torch.randn(60, 4, generator=g) + labels[:, None] * 3.0  # three well-separated classes
    out = probe_accuracies(on_device(codes[:40]), on_device(labels[:40]), on_device(codes[40:]),
                           on_device(labels[40:]))
    assert out["knn_accuracy"] == 1.0
    assert stratified_subset(on_device(labels), 30).tolist() == stratified_subset(labels.numpy(), 30).tolist()
    assert sparsity_summary(on_device(codes)) == sparsity_summary(codes)


def tiny_image_text_data(n_train: int = 40, n_test: int = 20) -> Dataset:
    """Images and words of the digits 0..9, row-aligned, every tensor OnDevice."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n_train + n_test) % 10
    images = torch.randint(0, 256, (len(y), 1, 28, 28), generator=g, dtype=torch.uint8)
    text = encode_text([DIGIT_WORDS[int(d)] for d in y])
    x_train = {"image": on_device(images[:n_train]), "text": on_device(text[:n_train])}
    x_test = {"image": on_device(images[n_train:]), "text": on_device(text[n_train:])}
    return Dataset("tiny", x_train, x_test, on_device(y[:n_train]), on_device(y[n_train:]),
                   classes=[str(d) for d in range(10)])


def test_multimodal_evaluation_runs_on_data_held_on_the_device():
    """The whole multimodal evaluation (distinct items, codes, translation, coherence, probes) of data whose
    tensors are on the device: on today's code ``item_rows`` and ``code_probes`` read labels with a bare
    ``.numpy()``."""
    data = tiny_image_text_data()
    torch.manual_seed(0)
    model = MultimodalAE(modality_specs(("image", "text")), latent_dim=4, image_channels=[4, 8], text_embed=4,
                         text_hidden=8)
    image_oracle = ev.Oracle("image", ev.ImageOracle().eval(), accuracy=1.0, seconds=0.0, cached=False)
    result = ev.evaluate_multimodal(model, data, oracles={"image": image_oracle})
    assert set(result["coherence"]) == {"image->text", "text->image", "joint->image", "joint->text"}
    assert result["test_items"] == {"image": 20, "text": 10}
    assert set(result["probes"]) == {"image", "text", "joint"}


@pytest.mark.parametrize("name", ["dense", "vae"])
def test_evaluate_model_reads_data_held_on_the_device(name, small_mnist):
    """Reconstruction, likelihood bounds (VAE), probes and sparsity of a model whose data is on the device:
    the same numbers as from the same data on the CPU."""
    d = small_mnist
    moved = Dataset(d.name, on_device(d.x_train[::4]), on_device(d.x_test[::2]), on_device(d.y_train[::4]),
                    on_device(d.y_test[::2]), classes=d.classes)
    plain = Dataset(d.name, d.x_train[::4], d.x_test[::2], d.y_train[::4], d.y_test[::2], classes=d.classes)
    torch.manual_seed(0)
    model = aelab.build_model(name, (1, 28, 28), latent_dim=4, hidden_dims=[16])
    on_dev = evaluate_model(model, moved, iwae_samples=4, progress=False)
    on_cpu = evaluate_model(model, plain, iwae_samples=4, progress=False)
    assert "linear_probe_accuracy" in on_dev and ("iwae_nll" in on_dev) == (name == "vae")
    drop = {"seconds", "seconds_by_part", "probe_seconds", "pixel_probe_seconds", "pixel_probe_cached"}  # time, and the cache the first call filled
    assert {k: v for k, v in on_dev.items() if k not in drop} == {k: v for k, v in on_cpu.items() if k not in drop}


def test_the_map_of_codes_held_on_the_device():
    """The explorer's and the report's 2-D map (PCA here) of codes that are still on the device."""
    codes = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    assert np.array_equal(project_codes(on_device(codes), method="pca").points,
                          project_codes(codes, method="pca").points)


# ---------------------------------------------------------------------------------------------- gpu_check.sh
STUB_PYTHON = """#!/bin/sh
# a stand-in for python in benchmarks/gpu_check.sh: fails the check named in $FAIL_CHECK, passes the others
case "$*" in
  *readme-run*) check=readme ;;
  *speed.py*) check=speed ;;
  *time_to_quality.py*) check=ttq ;;
  *"-m pytest"*) check=tests ;;
  *) check=device ;;
esac
[ "$check" = "$FAIL_CHECK" ] && exit 3
[ "$check" = device ] && echo '{"name": "stub GPU"}'
exit 0
"""


@pytest.mark.parametrize("fail", ["", "device", "readme", "tests", "speed", "ttq"])
def test_gpu_check_exits_non_zero_when_any_check_fails(tmp_path, fail):
    """benchmarks/gpu_check.sh with a stand-in python whose one check fails: the script's exit status says so,
    and its JSON names the check (a failed device check skips the others)."""
    stub = tmp_path / "python"
    stub.write_text(STUB_PYTHON)
    stub.chmod(0o755)
    out = tmp_path / "out"
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out)], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "PYTHON": str(stub), "FAIL_CHECK": fail})
    report = json.loads((out / "gpu_check.json").read_text())
    assert (result.returncode != 0) == bool(fail), result.stderr
    assert report["failed"] == ([fail] if fail else [])
    expected = ["device"] if fail == "device" else ["device", "readme", "tests", "speed", "ttq"]
    assert list(report["checks"]) == expected
    assert report["device"] == (None if fail == "device" else {"name": "stub GPU"})


# ---------------------------------------------------------------------------------------------- on a real GPU
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu_check.sh)")


@needs_cuda
def test_evaluation_and_the_map_on_a_cuda_device(small_mnist):
    """The running checks above with real CUDA tensors: a model and its data on the GPU."""
    torch.manual_seed(0)
    model = aelab.build_model("vae", (1, 28, 28), latent_dim=4, hidden_dims=[16]).cuda()
    d = small_mnist
    data = Dataset(d.name, d.x_train.cuda(), d.x_test.cuda(), d.y_train.cuda(), d.y_test.cuda(), classes=d.classes)
    result = evaluate_model(model, data, iwae_samples=4, progress=False)
    assert np.isfinite(result["iwae_nll"]) and 0 <= result["linear_probe_accuracy"] <= 1
    assert project_codes(torch.randn(50, 4, device="cuda"), method="pca").points.shape == (50, 2)
    mm = tiny_image_text_data()
    cuda_mm = Dataset("tiny", {k: v.as_subclass(torch.Tensor).cuda() for k, v in mm.x_train.items()},
                      {k: v.as_subclass(torch.Tensor).cuda() for k, v in mm.x_test.items()},
                      mm.y_train.as_subclass(torch.Tensor).cuda(), mm.y_test.as_subclass(torch.Tensor).cuda(),
                      classes=mm.classes)
    mm_model = MultimodalAE(modality_specs(("image", "text")), latent_dim=4, image_channels=[4, 8], text_embed=4,
                            text_hidden=8).cuda()
    oracle = ev.Oracle("image", ev.ImageOracle().cuda().eval(), accuracy=1.0, seconds=0.0, cached=False)
    assert ev.evaluate_multimodal(mm_model, cuda_mm, oracles={"image": oracle})["test_items"] == {"image": 20,
                                                                                                 "text": 10}
