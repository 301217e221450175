"""Time to quality (issue 21): how long aelab's shipped recipes take to reach what the loops people write reach
in 10 epochs, in one run on one machine.

    python benchmarks/time_to_quality.py                     # full MNIST from ../shared/data (or $AELAB_DATA_DIR)
    python benchmarks/time_to_quality.py --models dense,vae  # a subset
    python benchmarks/time_to_quality.py --quick             # mnist5k, 2 reference epochs: checks the script

Per family, measured in the same process one after the other:
- the **reference loop** of ``baselines.py`` for 10 epochs (``iter_baseline``: a per-sample Dataset, a
  ``DataLoader(batch_size=128, shuffle=True)``, Adam 1e-3, ``loss.item()`` each step): dense is the seed's
  784-256-128-32 autoencoder (MSE), vae the pytorch/examples VAE (784-400-20, summed BCE + KL on grey-level
  images: no binarization), conv the seed's convolutional exercise as its hints complete it (Conv2d 1->32->64
  stride 2, linear to 32, ConvTranspose2d back, MSE). Its time is the sum of its epochs' training time, its
  target the test metric after the 10th epoch.
- **aelab's recipe**: ``aelab train --config examples/configs/fast-<family>.toml --dataset mnist`` in a
  subprocess, exactly as a user runs it (``--no-report``: the report is written after training and is not
  part of the time). Its time to quality is the sum of metrics.jsonl's ``seconds`` (training time of each
  epoch) up to the first epoch whose test metric is at or below the target.
- ``conv_step`` (with conv): seconds per epoch of aelab's conv training step before and after each change of
  issue 21 (``CONV_STEPS``), each timed on the same batches, taking turns, with the test MSE after
  ``--conv-epochs`` epochs of each to show the change keeps the quality.

JSON to stdout (or ``--out``), a Markdown table to stderr (and ``--markdown``). The JSON records the load
average before and after and ``other_cores``, the CPU cores other processes used meanwhile: wall times and
their ratios are comparable only between quiet runs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baselines  # noqa: E402
from speed import OtherLoad, load_average, machine, mnist_dir, publish, write  # noqa: E402

import aelab  # noqa: E402
from aelab.data import as_float  # noqa: E402
from aelab.device import INFERENCE_BATCH, resolve_device  # noqa: E402
from aelab.evaluation import neg_elbo  # noqa: E402
from aelab.registry import load_model  # noqa: E402
from aelab.training.optim import make_adam  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "examples" / "configs"
# the metric compared (a key of aelab's metrics.jsonl), its unit, and the bound on time to quality
FAMILIES = {
    "dense": dict(metric="test_loss", unit="test MSE per pixel", bound=0.07),
    "vae": dict(metric="test_neg_elbo", unit="test -ELBO, nats per image", bound=0.25),
    "conv": dict(metric="test_loss", unit="test MSE per pixel", bound=0.25),
}
REFERENCE_EPOCHS = 10


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ the loops
def reference(name: str, data, epochs: int, device) -> dict:
    records = list(baselines.iter_baseline(name, data, epochs, device))
    for r in records:
        log(f"  [{name}] reference epoch {r['epoch']:2d}: {r['seconds']:6.2f} s  {r['test_metric']:.5g}")
    return {"epochs": epochs, "seconds": sum(r["seconds"] for r in records),
            "epoch_seconds": [round(r["seconds"], 3) for r in records],
            "metric_per_epoch": [r["test_metric"] for r in records], "target": records[-1]["test_metric"]}


def fp32_metric(name: str, run_dir: Path, data, device) -> float:
    """The run's final test metric recomputed in float32 from its model.pt (the trainer evaluates each epoch in the
    run's precision: for a bf16 recipe, bfloat16): MSE per pixel, or the -ELBO per image (one seeded sample)."""
    model = load_model(run_dir / "model.pt", map_location=device).to(device)
    x = data.x_test.to(device)
    if name == "vae":
        return float(neg_elbo(model, x, seed=0).mean())
    total = 0.0
    with torch.inference_mode():
        for i in range(0, len(x), INFERENCE_BATCH):
            xb = as_float(x[i:i + INFERENCE_BATCH])
            total += F.mse_loss(model.reconstruct(xb).float(), xb, reduction="sum").item()
    return total / (len(x) * x[0].numel())


def recipe(name: str, data_args: list[str], device: str, workdir: Path) -> dict:
    """``aelab train --config fast-<name>.toml`` in a subprocess; its metrics.jsonl, epoch by epoch."""
    config = CONFIGS / f"fast-{name}.toml"
    out = workdir / f"fast-{name}"
    cmd = [sys.executable, "-m", "aelab", "train", "--config", str(config), *data_args, "--device", device,
           "--out", str(out), "--no-report", "--quiet"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr.strip()[-2000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    metric = FAMILIES[name]["metric"]
    for r in rows:
        log(f"  [{name}] recipe epoch {r['epoch']:2d}: {r['seconds']:6.2f} s  {r[metric]:.5g}")
    return {"config": str(config.relative_to(ROOT)), "settings": json.loads((out / "config.json").read_text()),
            "command": "aelab train --config " + str(config.relative_to(ROOT)) + " " + " ".join(data_args),
            "epoch_seconds": [round(r["seconds"], 3) for r in rows], "metric_per_epoch": [r[metric] for r in rows],
            "process_wall_seconds": wall, "run_dir": out}


def time_to(epoch_seconds: list[float], metrics: list[float], target: float) -> tuple[float | None, int | None]:
    """Training seconds summed up to the first epoch whose metric is at or below ``target``; (None, None) if none."""
    total = 0.0
    for epoch, (seconds, value) in enumerate(zip(epoch_seconds, metrics), 1):
        total += seconds
        if value <= target:
            return total, epoch
    return None, None


# ------------------------------------------------------------------------------------------------ conv step
def conv_variant(kind: str, device):
    """aelab's conv model and input layout as each change left them: ``before`` (NCHW, float32), ``channels_last``,
    ``bf16`` (channels-last, bfloat16 autocast: the recipe's precision)."""
    torch.manual_seed(0)
    model = aelab.build_model("conv", (1, 28, 28), latent_dim=32).to(device)
    layout = torch.contiguous_format if kind == "before" else torch.channels_last
    return model.to(memory_format=layout), layout, kind == "bf16"


CONV_STEPS = ("before", "channels_last", "bf16")


def conv_steps(data, device, epochs: int) -> dict:
    """Seconds per epoch (median of the epochs) and the test MSE after ``epochs`` of each variant, taking turns."""
    x_all = as_float(data.x_train.to(device))
    x_test = as_float(data.x_test.to(device))
    runs = {}
    for kind in CONV_STEPS:
        model, layout, bf16 = conv_variant(kind, device)
        runs[kind] = dict(model=model, layout=layout, bf16=bf16, opt=make_adam(model.parameters(), 1e-3, 0.0),
                          seconds=[], mse=None)
    for epoch in range(epochs):
        order = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(epoch)).to(device)
        for kind, run in runs.items():
            model, opt = run["model"], run["opt"]
            model.train()
            t0 = time.perf_counter()
            for i in range(0, len(x_all), 128):
                xb = x_all[order[i:i + 128]].contiguous(memory_format=run["layout"])
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run["bf16"]):
                    out = model(xb)
                loss = F.mse_loss(out.recon.float(), xb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            run["seconds"].append(time.perf_counter() - t0)
            log(f"  [conv step] {kind:14s} epoch {epoch + 1}: {run['seconds'][-1]:.2f} s")
    result = {}
    for kind, run in runs.items():
        model = run["model"].eval()
        with torch.inference_mode():
            mse = sum(F.mse_loss(model.reconstruct(x_test[i:i + 2048]).float(), x_test[i:i + 2048], reduction="sum")
                      .item() for i in range(0, len(x_test), 2048)) / x_test.numel()
        result[kind] = {"seconds_per_epoch": statistics.median(run["seconds"]), "epoch_seconds": run["seconds"],
                        "test_mse": mse, "epochs": epochs}
    first = result[CONV_STEPS[0]]["seconds_per_epoch"]
    for row in result.values():
        row["speedup"] = first / row["seconds_per_epoch"]
    return result


# ------------------------------------------------------------------------------------------------ report
def markdown(report: dict) -> str:
    lines = [f"{report['machine']['cpu']}, {report['machine']['threads']} threads; torch {report['machine']['torch']}; "
             f"{report['dataset']}; load average before {report['load_before']}, after {report.get('load_after')}; "
             f"cores used by other processes meanwhile: {report.get('other_cores')}.", "",
             f"| family | reference loop, {report['reference_epochs']} epochs | its metric | aelab recipe | reached at | time to quality | "
             "fraction (bound) |", "|---|---|---|---|---|---|---|"]
    notes = []
    for name, res in report["families"].items():
        ref, rec, ttq = res["reference"], res["recipe"], res["time_to_quality"]
        reached = (f"epoch {ttq['epoch']} of {len(rec['epoch_seconds'])}" if ttq["epoch"]
                   else f"not in {len(rec['epoch_seconds'])} epochs (best {min(rec['metric_per_epoch']):.5g})")
        seconds = "-" if ttq["seconds"] is None else f"{ttq['seconds']:.1f} s"
        fraction = "-" if ttq["fraction"] is None else f"**{ttq['fraction']:.3f}** ({ttq['bound']})"
        lines.append(f"| {name} | {ref['seconds']:.1f} s | {ref['target']:.5g} | `{rec['config']}` | {reached} | "
                     f"{seconds} | {fraction} |")
        notes.append(f"{name}: the recipe's last epoch {rec['metric_per_epoch'][-1]:.5g} as trained, "
                     f"{rec['final_metric_fp32']:.5g} recomputed in float32")
    lines += ["", "Final metric, " + "; ".join(notes) + "."]
    if "conv_step" in report:
        lines += ["", "| conv step | s/epoch | speed-up | test MSE after the same epochs |", "|---|---|---|---|"]
        for kind, row in report["conv_step"].items():
            lines.append(f"| {kind} | {row['seconds_per_epoch']:.2f} | {row['speedup']:.2f}x | {row['test_mse']:.5f} |")
    if (report.get("other_cores") or 0) > 0.1:
        lines += ["", f"**Noisy**: other processes used {report['other_cores']:.2f} CPU cores on average during this "
                      "run; its times and ratios are not comparable with a quiet run."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="dense,vae,conv", help="comma-separated subset of dense,vae,conv")
    p.add_argument("--quick", action="store_true", help="mnist5k, 2 reference epochs: checks the script")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--data-dir", default=None, help="folder holding mnist/ (default ../shared/data)")
    p.add_argument("--conv-epochs", type=int, default=2, help="epochs of each conv-step variant (0: skip them)")
    p.add_argument("--out", default=None, help="write the JSON here (after each family) instead of stdout")
    p.add_argument("--markdown", default=None, help="also write the Markdown table here")
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for name in models:
        if name not in FAMILIES:
            p.error(f"unknown family {name!r}; choose from {', '.join(FAMILIES)}")
    device = resolve_device(args.device)
    if args.quick:
        data, data_args, epochs = aelab.load_dataset("mnist5k"), ["--dataset", "mnist5k"], 2
    else:
        folder = mnist_dir(args.data_dir)
        data = aelab.load_dataset("mnist", data_dir=folder)
        data_args = ["--dataset", "mnist"] + (["--data-dir", str(folder)] if folder else [])
        epochs = REFERENCE_EPOCHS
    others = OtherLoad()
    report = {"dataset": data.name, "n_train": len(data.x_train), "machine": machine(device),
              "load_before": load_average(), "reference_epochs": epochs, "families": {}}
    log(f"time to quality: {data.name} on {device}, load average {report['load_before']}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            ref = reference(name, data, epochs, device)
            rec = recipe(name, data_args, str(device), Path(tmp))
            rec["final_metric_fp32"] = fp32_metric(name, rec.pop("run_dir"), data, device)
            seconds, epoch = time_to(rec["epoch_seconds"], rec["metric_per_epoch"], ref["target"])
            ttq = {"seconds": seconds, "epoch": epoch, "bound": FAMILIES[name]["bound"],
                   "fraction": None if seconds is None else seconds / ref["seconds"]}
            ttq["within_bound"] = ttq["fraction"] is not None and ttq["fraction"] <= ttq["bound"]
            report["families"][name] = {"unit": FAMILIES[name]["unit"], "reference": ref, "recipe": rec,
                                        "time_to_quality": ttq}
            report["other_cores"] = others.cores()
            log(f"[{name}] time to quality {ttq['fraction']} of the reference (bound {ttq['bound']})")
            write(report, args.out)  # a run cut short still leaves the families done so far
    if "conv" in models and args.conv_epochs > 0:
        report["conv_step"] = conv_steps(data, device, args.conv_epochs)
    report["ratios"] = {name: res["time_to_quality"]["fraction"] for name, res in report["families"].items()}
    report["load_after"] = load_average()
    report["other_cores"] = others.cores()
    publish(report, args.out, markdown(report), args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
