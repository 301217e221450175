"""Speed benchmark (issue 5): aelab against the training loops people write today, in one run.

    python benchmarks/speed.py                  # full MNIST (../shared/data/mnist or $AELAB_DATA_DIR)
    python benchmarks/speed.py --quick          # mnist5k: checks the whole script in about a minute
    python benchmarks/speed.py --models dense --out speed.json --markdown speed.md

For each model (dense 784-256-128-32, the pytorch/examples VAE 784-400-20, the conv autoencoder),
measured in the same process on the same machine:
- the baseline loop of ``baselines.py`` (per-sample Dataset + DataLoader(batch_size=128, shuffle=True));
- aelab (its ``Trainer``, seeded as ``aelab.train`` seeds it): the same architecture, batch 128, Adam
  1e-3, the same loss;
- aelab with ``compile=True`` (torch.compile), to show where it helps and where it does not;
- aelab with its time-to-quality recipe (``RECIPES``): the wall time until its test metric first
  reaches the baseline's after 10 epochs (evaluation time included).
- the bare PyTorch loop of ``baselines.py`` (``iter_bare``): the fastest eager loop we know for the same
  model, no framework at all; its ratio to the baseline is the ceiling of any eager trainer here.
The loops take turns, an epoch each, so a machine whose speed drifts slows them all alike.

Reported per loop: median seconds per epoch, samples per second, the ratio to the baseline, the test
metric after the same number of epochs, time to quality, and the fraction of the machine reached:
model FLOPs per epoch over seconds per epoch, against (a) the step's own matrix multiplies and
convolutions replayed alone (``hardware.step_bound``: the bound on an epoch here) and (b) a square
float32 matmul. Also the peak resident memory of a full-MNIST ``aelab train`` process.

JSON goes to stdout (or ``--out``), the Markdown table to stderr (and ``--markdown``). Time is wall
time, so other work on the machine shows up in it: the JSON records the load average before the run
and ``other_cores``, the CPU other processes used meanwhile.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baselines  # noqa: E402
import hardware  # noqa: E402

import aelab  # noqa: E402
from aelab.data import as_float  # noqa: E402
from aelab.config import RunConfig  # noqa: E402
from aelab.training import Trainer  # noqa: E402
from aelab.device import resolve_device  # noqa: E402
from aelab.training.trainer import autocast_context, wants_channels_last  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# aelab's architecture for each baseline, and the test metric compared (a key of aelab's metrics.jsonl).
MODELS = {
    "dense": dict(build=dict(latent_dim=32), metric="test_loss", unit="test MSE per pixel"),
    "vae": dict(build=dict(latent_dim=20, hidden_dims=[400]), metric="test_neg_elbo", unit="test -ELBO, nats/image"),
    "conv": dict(build=dict(latent_dim=32), metric="test_loss", unit="test MSE per pixel"),
}
# aelab's own settings for time to quality (the baseline: batch 128, Adam 1e-3, 10 epochs), chosen on full
# MNIST (benchmarks/README.md). dense: with the encoder's He init (weight_init="he", the default since
# 2026-11-28) lr 2e-3 passes the baseline's 10-epoch test MSE at epoch 3 (0.00806 and 0.00832 for seeds 0, 1);
# before it, batch 64 at lr 2e-3 needed 5 epochs. vae: a higher rate decayed to 0 (cosine) reaches the
# baseline's 10-epoch ELBO by epoch 6-7 and ends lower.
RECIPES = {"dense": dict(lr=2e-3, epochs=5),
           "vae": dict(lr=3e-3, lr_schedule="cosine", epochs=10),
           "conv": dict(lr=2e-3, epochs=5)}  # conv: the dense recipe, untried (gpu plan only)
# epochs per loop: baseline, aelab (same settings), aelab compiled; and whether to run the recipe (else the
# same-settings run stands in for it, against the baseline's metric after its last epoch)
PLANS = {
    "full": {"dataset": "mnist", "dense": (10, 10, 3, True), "vae": (10, 10, 3, True), "conv": (2, 2, 2, False)},
    "quick": {"dataset": "mnist5k", "dense": (10, 10, 0, True), "vae": (10, 10, 0, True), "conv": (2, 2, 0, False)},
    "gpu": {"dataset": "mnist", "dense": (10, 10, 2, True), "vae": (10, 10, 2, True), "conv": (10, 10, 2, True)},
}


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def mnist_dir(data_dir: str | None) -> Path | None:
    """The folder holding MNIST's four IDX files: --data-dir, $AELAB_DATA_DIR, then ../shared/data or
    shared/data beside the repository (each either the folder itself or its mnist/ subfolder)."""
    roots = [data_dir, os.environ.get("AELAB_DATA_DIR"), ROOT.parent / "shared" / "data", ROOT / "shared" / "data"]
    for root in filter(None, roots):
        for folder in (Path(root) / "mnist", Path(root)):
            if (folder / "train-images-idx3-ubyte.gz").is_file():
                return folder
    return None


def load_data(plan: str, data_dir: str | None):
    if PLANS[plan]["dataset"] == "mnist5k":
        return aelab.load_dataset("mnist5k")
    return aelab.load_dataset("mnist", data_dir=mnist_dir(data_dir))  # None: aelab's own search (cache, download)


def machine(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine()}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line)
    except (OSError, StopIteration):
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


class OtherLoad:
    """CPU cores used by every other process while the benchmark ran (Linux): all busy CPU time from
    /proc/stat less this process's own, over the wall time. 0 on a quiet machine."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
        own = os.times()
        return time.perf_counter(), busy, own.user + own.system + own.children_user + own.children_system

    def cores(self) -> float | None:
        end = self._sample()
        if self.start is None or end is None:
            return None
        wall = end[0] - self.start[0]
        return round(max(0.0, (end[1] - self.start[1]) - (end[2] - self.start[2])) / max(wall, 1e-9), 2)


# ------------------------------------------------------------------------------------------------ loops
def iter_aelab(name: str, data, epochs: int, device, **settings):
    """Train aelab's model for ``name`` (seeded as ``aelab.train`` seeds it) with its Trainer, yielding each
    epoch's record: seconds (training), eval_seconds, test_metric and the rest of its metrics."""
    spec = MODELS[name]
    cfg = RunConfig(model=name, dataset=data.name, epochs=epochs, device=str(device), report=False,
                    **{"batch_size": 128, "lr": 1e-3, **settings})
    torch.manual_seed(cfg.seed)
    model = aelab.build_model(name, data.input_shape, **spec["build"])
    torch.manual_seed(cfg.seed + 1)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, data, cfg, out, progress=False, log=None)
        while trainer.epoch < epochs:
            trainer.fit(until=trainer.epoch + 1)
            yield dict(trainer.history[-1], test_metric=trainer.history[-1][spec["metric"]])


def _get_rng():
    """The CPU random state and, where CUDA is available, the current GPU's (the one the benchmark trains on;
    asking for every GPU's would open a context on each)."""
    return torch.get_rng_state(), torch.cuda.get_rng_state() if torch.cuda.is_available() else None


def _set_rng(state) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1])


def private_rng(loop):
    """Run an epoch generator on its own random stream, so loops taking turns do not draw from each other's."""
    state = _get_rng()
    while True:
        saved = _get_rng()
        _set_rng(state)
        try:
            record = next(loop)
        except StopIteration:
            return
        finally:
            state = _get_rng()
            _set_rng(saved)
        yield record


def take_turns(loops: dict, show) -> dict[str, list]:
    """One epoch of each loop in turn (A1 B1 C1 A2 B2 ...) until all are done: a machine whose speed drifts
    (other work, clocks) then slows every loop alike, and the ratios stay fair."""
    records = {key: [] for key in loops}
    active = {key: private_rng(loop) for key, loop in loops.items()}
    while active:
        for key in list(active):
            record = next(active[key], None)
            if record is None:
                del active[key]
                continue
            records[key].append(record)
            show(key, record)
    return records


def summary(records: list[dict], n_train: int, skip_first: bool = False) -> dict:
    """Median seconds per epoch (the first epoch left out when it holds compilation), samples/s, last metric."""
    timed = records[1:] if skip_first and len(records) > 1 else records
    median = statistics.median(r["seconds"] for r in timed)
    return {"epochs": len(records), "seconds_per_epoch": median, "samples_per_second": n_train / median,
            "epoch_seconds": [round(r["seconds"], 3) for r in records],
            "test_metric": records[-1]["test_metric"], "test_metric_per_epoch": [r["test_metric"] for r in records]}


def time_to(records: list[dict], target: float) -> tuple[float | None, int | None]:
    """Wall seconds (training and evaluation) until the first epoch whose test metric is at or below
    ``target``, and that epoch; (None, None) if never."""
    total = 0.0
    for r in records:
        total += r["seconds"] + r.get("eval_seconds", 0.0)
        if r["test_metric"] <= target:
            return total, r["epoch"]
    return None, None


# ------------------------------------------------------------------------------------------------ measures
def iter_bound(name: str, data, device, rounds: int):
    """The step bound, measured again at each turn (yielded like an epoch): FLOPs of one batch-128 step of
    aelab's model, and the seconds its heavy ops take alone, scaled to an epoch."""
    torch.manual_seed(0)
    model = aelab.build_model(name, data.input_shape, **MODELS[name]["build"]).to(device)
    if wants_channels_last(model, device):  # as the trainer does
        model = model.to(memory_format=torch.channels_last)
    x = as_float(data.x_train[:128].to(device))
    steps = len(data.x_train) / 128
    for i in range(1, rounds + 1):
        step = hardware.step_bound(model, x, device, autocast=lambda: autocast_context(device))
        yield {"epoch": i, "seconds": step["seconds"] * steps, "flops_per_step": step["flops"],
               "flops_per_epoch": step["flops"] * steps, "gflops": step["gflops"], "calls": step["calls"]}


def peak_rss(data_dir: str | None) -> dict:
    """Peak resident memory of a separate process training the dense model for one epoch of full MNIST."""
    # VmHWM is this process's own peak: getrusage's ru_maxrss would carry over the peak of the benchmark
    # process it was started from (Linux folds the parent's high-water mark into it at exec)
    code = ("import json, resource, sys, tempfile, aelab\n"
            "def peak_mb():\n"
            "    try:\n"
            "        line = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
            "        return int(line.split()[1]) / 1024\n"
            "    except (OSError, StopIteration):\n"
            "        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
            "d = aelab.load_dataset('mnist', data_dir=sys.argv[1])\n"
            "with tempfile.TemporaryDirectory() as out:\n"
            "    aelab.train('dense', d, out=out, epochs=1, progress=False, log=None, report=False)\n"
            "print(json.dumps({'peak_rss_mb': peak_mb()}))\n")
    folder = mnist_dir(data_dir)
    if folder is None:
        return {"skipped": "full MNIST not found"}
    done = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    return {"dataset": "mnist", "model": "dense", "epochs": 1, **json.loads(done.stdout.strip().splitlines()[-1])}


def bench_model(name: str, data, device, plan: tuple, peak: dict, compile_check: bool = True,
                bare: bool = True) -> dict:
    n_baseline, n_aelab, n_compile, with_recipe = plan
    n_bare = n_aelab if bare else 0
    n_compile = n_compile if compile_check else 0
    recipe = dict(RECIPES[name]) if with_recipe else None
    loops = {"baseline": baselines.iter_baseline(name, data, n_baseline, device),
             "aelab": iter_aelab(name, data, n_aelab, device)}
    if n_compile:
        loops["aelab_compile"] = iter_aelab(name, data, n_compile, device, compile=True)
    if recipe:
        loops["recipe"] = iter_aelab(name, data, recipe.pop("epochs"), device, **recipe)
    if n_bare:
        loops["bare"] = baselines.iter_bare(name, data, n_bare, device)
    loops["bound"] = iter_bound(name, data, device, max(n_baseline, n_aelab))
    log(f"[{name}] taking turns, an epoch each: " + ", ".join(loops))

    def show(key, r):
        if key != "bound":
            log(f"  {key:14s} epoch {r['epoch']:2d}: {r['seconds']:6.2f} s  {MODELS[name]['metric']} {r['test_metric']:.5g}")

    recs = take_turns(loops, show)
    n = len(data.x_train)
    bound = recs.pop("bound")
    result = {"unit": MODELS[name]["unit"], "batch_size": 128, "lr": 1e-3,
              "flops_per_step": bound[0]["flops_per_step"], "flops_per_epoch": bound[0]["flops_per_epoch"],
              "heavy_calls_per_step": bound[0]["calls"],
              "bound_seconds_per_epoch": statistics.median(r["seconds"] for r in bound),
              "bound_seconds_each_turn": [round(r["seconds"], 3) for r in bound]}
    base, same = recs["baseline"], recs["aelab"]
    summaries = {"baseline": summary(base, n), "aelab": summary(same, n)}
    if "bare" in recs:
        summaries["bare"] = summary(recs["bare"], n)
    if "aelab_compile" in recs:
        summaries["aelab_compile"] = summary(recs["aelab_compile"], n, skip_first=True)
        summaries["aelab_compile"]["first_epoch_seconds"] = recs["aelab_compile"][0]["seconds"]

    # time to quality: wall time until aelab's test metric reaches the baseline's after its last epoch
    target = base[-1]["test_metric"]
    ttq = {"target": target, "target_epochs": len(base), "baseline_seconds": sum(r["seconds"] for r in base),
           "counted": "aelab: training + its per-epoch evaluation; baseline: training only"}
    if recipe is not None:
        ttq_recs, ttq["recipe"] = recs["recipe"], RECIPES[name]
        summaries["recipe"] = summary(ttq_recs, n)
    else:  # no separate run in this plan: the same-settings run is the recipe
        ttq_recs, ttq["recipe"] = same, {"batch_size": 128, "lr": 1e-3, "epochs": n_aelab}
    ttq["aelab_seconds"], ttq["epochs"] = time_to(ttq_recs, target)
    ttq["epochs_run"] = len(ttq_recs)
    if ttq["aelab_seconds"] is not None:
        ttq["fraction_of_baseline"] = ttq["aelab_seconds"] / ttq["baseline_seconds"]
    result["time_to_quality"] = ttq

    base_sps = summaries["baseline"]["samples_per_second"]
    for key, loop in summaries.items():
        loop["ratio"] = loop["samples_per_second"] / base_sps
        same_batch = key != "recipe" or RECIPES[name].get("batch_size", 128) == 128  # the bound is at batch 128
        loop["fraction_of_step_bound"] = (result["bound_seconds_per_epoch"] / loop["seconds_per_epoch"]
                                          if same_batch else None)
        loop["achieved_gflops"] = result["flops_per_epoch"] / loop["seconds_per_epoch"] / 1e9
        loop["fraction_of_gemm_peak"] = loop["achieved_gflops"] / peak["gflops"]
    result["loops"] = summaries
    return result


# ------------------------------------------------------------------------------------------------ report
def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"{m['cpu']}, {m['threads']} threads, {m.get('gpu', 'no GPU')}; torch {m['torch']}; "
             f"{report['dataset']} ({report['n_train']:,} training images); load average before: "
             f"{report['load_before']}; cores used by other processes meanwhile: {report.get('other_cores')}; "
             f"square float32 matmul "
             f"({report['gemm']['n']}^3): {report['gemm']['gflops']:.0f} GFLOP/s.", "",
             "| model | loop | epochs | s/epoch | samples/s | vs baseline | test metric | of step bound "
             "| GFLOP/s | time to quality |", "|---|---|---|---|---|---|---|---|---|---|"]
    names = {"baseline": "DataLoader loop", "aelab": "aelab", "aelab_compile": "aelab, compile",
             "recipe": "aelab, its recipe", "bare": "bare PyTorch loop (the ceiling)"}
    for model, res in report["models"].items():
        ttq = res["time_to_quality"]
        ttq_row = "recipe" if "recipe" in res["loops"] else "aelab"
        labels = dict(names)
        if "recipe" in res["loops"]:
            labels["recipe"] = "aelab, " + ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                                                     for k, v in ttq["recipe"].items() if k != "epochs")
        for key, loop in res["loops"].items():
            quality = ""
            if key == "baseline":
                quality = f"{ttq['baseline_seconds']:.1f} s to {ttq['target']:.4g} ({ttq['target_epochs']} epochs)"
            elif key == ttq_row and ttq.get("aelab_seconds") is not None:
                quality = (f"{ttq['aelab_seconds']:.1f} s = {ttq['fraction_of_baseline']:.2f} of baseline "
                           f"(epoch {ttq['epochs']})")
            elif key == ttq_row:
                quality = f"not reached in {ttq['epochs_run']} epochs"
            lines.append(f"| {model} | {labels[key]} | {loop['epochs']} | {loop['seconds_per_epoch']:.2f} | "
                         f"{loop['samples_per_second']:,.0f} | {loop['ratio']:.2f}x | {loop['test_metric']:.5g} | "
                         f"{_pct(loop['fraction_of_step_bound'])} | {loop['achieved_gflops']:.0f} | {quality} |")
    others = report.get("other_cores")
    if others is not None and others > 0.1:
        lines += ["", f"**Noisy**: other processes used {others:.2f} CPU cores on average during this run; wall "
                      f"times and their ratios are not comparable with a quiet run."]
    units = ", ".join(f"{k}: {v['unit']}" for k, v in report["models"].items())
    lines += ["", f"Test metric: {units}. \"of step bound\": the seconds the step's own matrix multiplies and "
              "convolutions take alone, replayed back to back, over the measured epoch. \"bare PyTorch loop\": "
              "the fastest eager loop we know for the same model, with no framework (data on the device, one "
              "gather a batch, fused Adam, no metrics; `baselines.iter_bare`): the ceiling of any eager trainer here."]
    rss = report.get("peak_rss", {})
    if "peak_rss_mb" in rss:
        lines.append(f"Peak resident memory of `aelab train` (dense, full MNIST, one epoch): {rss['peak_rss_mb']:.0f} MB.")
    return "\n".join(lines) + "\n"


def _pct(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def write(report: dict, out: str | None) -> None:
    if out:
        Path(out).write_text(json.dumps(report, indent=2) + "\n")


def publish(report: dict, out: str | None, table: str, markdown_path: str | None) -> None:
    """The JSON to ``out`` (else stdout), the Markdown table to stderr and to ``markdown_path`` when given."""
    write(report, out)
    if not out:
        print(json.dumps(report, indent=2))
    log("\n" + table)
    if markdown_path:
        Path(markdown_path).write_text(table)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="mnist5k and fewer epochs: about a minute")
    p.add_argument("--plan", choices=sorted(PLANS), default=None, help="full (default), quick, or gpu")
    p.add_argument("--models", default="dense,vae,conv", help="comma-separated subset of dense,vae,conv")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--data-dir", default=None, help="folder holding mnist/ (default ../shared/data)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile runs")
    p.add_argument("--no-rss", action="store_true", help="skip the peak-memory subprocess")
    p.add_argument("--no-bare", action="store_true", help="skip the bare PyTorch loop (the ceiling)")
    p.add_argument("--out", default=None, help="write the JSON here (after each model) instead of stdout")
    p.add_argument("--markdown", default=None, help="also write the Markdown table here")
    args = p.parse_args(argv)

    plan = args.plan or ("quick" if args.quick else "full")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for name in models:
        if name not in MODELS:
            p.error(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    device = resolve_device(args.device)
    data = load_data(plan, args.data_dir)
    others = OtherLoad()
    report = {"plan": plan, "dataset": data.name, "n_train": len(data.x_train), "machine": machine(device),
              "load_before": load_average(), "recipes": {k: RECIPES[k] for k in models}}
    log(f"speed benchmark: {plan} plan on {device}, {data.name}, load average {report['load_before']}")
    report["gemm"] = hardware.gemm_gflops(device)
    log(f"square float32 matmul: {report['gemm']['gflops']:.0f} GFLOP/s")
    if device.type == "cuda":  # the rate the bf16 autocast step can reach
        report["gemm_bf16"] = hardware.gemm_gflops(device, dtype=torch.bfloat16)
        log(f"square bf16 matmul: {report['gemm_bf16']['gflops']:.0f} GFLOP/s")
    report["models"] = {}
    for name in models:
        t0 = time.perf_counter()
        report["models"][name] = bench_model(name, data, device, PLANS[plan][name], report["gemm"],
                                             compile_check=not args.no_compile, bare=not args.no_bare)
        report["models"][name]["benchmark_seconds"] = time.perf_counter() - t0
        report["other_cores"] = others.cores()
        log(f"[{name}] done in {time.perf_counter() - t0:.0f} s")
        write(report, args.out)  # a run cut short still leaves the models done so far
    if not args.no_rss and device.type == "cpu":
        report["peak_rss"] = peak_rss(args.data_dir)
    report["load_after"] = load_average()
    report["other_cores"] = others.cores()
    publish(report, args.out, markdown(report), args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
