"""The paper's Table 1 on real distorted MNIST: a CNN vs an ST-CNN per column, same budget.

For every column (distortion R, RTS, P, E, TC) the two models of ``--pair`` train at the same
time, one process and one torch thread each, so each gets one of the machine's two cores for
the same wall-clock budget (``--max-minutes``) with the same optimiser, schedule and seed.
Because the models differ in speed, ``--epochs`` may give each its own epoch count (sized so
its schedule ends inside the budget); ``--max-minutes`` stops any run after the epoch that
would overrun. ``--epochs auto`` sizes each model's schedule to the budget per column: a short
calibration run of each model (both at once, as in the real run) measures its seconds per
training image and per test image, and the epoch count is the budget's worth, less a margin.
The recipe options (``--loc-lr-scale``, ``--theta-reg``, ``--freeze-loc-epochs``,
``--padding-mode``, ``--out-size``) apply to the model with a spatial transformer only.

Writes ``benchmarks/results/accuracy-TAG.{json,md}`` (table, learning curves, machine, the time
each run took and its training throughput in img/s) and each run's per-epoch metrics and STN
picture beside it.

Run:  .venv/bin/python benchmarks/accuracy.py --columns rts --max-minutes 30 \\
          --epochs paper-cnn=5,paper-st-cnn=10 --loc-lr-scale 0.1 --tag paper-rts
      .venv/bin/python benchmarks/accuracy.py --synthetic --out /tmp/acc   (seconds, no data)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = ("r", "rts", "p", "e", "tc")
#: Jaderberg et al. 2015, Table 1 (error %): (CNN, ST-CNN) per column.
PAPER = {"r": (1.2, 0.7), "rts": (0.8, 0.5), "p": (1.5, 0.8), "e": (1.4, 1.2), "tc": (3.5, 1.7)}
CNNS = ("mnist-cnn", "paper-cnn")
RECIPE = ("loc_lr_scale", "theta_reg", "freeze_loc_epochs", "padding_mode", "out_size")
#: --epochs auto: (training images, test images) of the calibration run, and the budget share
#: the schedule is sized to (the rest absorbs the first epoch's warm-up and the machine's noise).
CALIBRATION_IMAGES = (1536, 1024)
BUDGET_USE = 0.92


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--columns", default="rts", help="comma list of r,rts,p,e,tc")
    ap.add_argument("--pair", default="paper-cnn,paper-st-cnn", help="CNN,ST-CNN zoo names")
    ap.add_argument(
        "--epochs",
        default="10",
        help="N for both, per model (paper-cnn=5,paper-st-cnn=10), or auto (sized to the budget)",
    )
    ap.add_argument("--max-minutes", type=float, default=30.0, help="training budget per model")
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--lr", type=float, default=0.003)
    ap.add_argument("--schedule", default="onecycle")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dropout", type=float, default=None, help="override both models' dropout")
    ap.add_argument("--padding-mode", default=None, help="sampler padding of the ST-CNN")
    ap.add_argument("--loc-lr-scale", type=float, default=None, help="localisation lr factor")
    ap.add_argument("--theta-reg", type=float, default=None, help="identity regularisation")
    ap.add_argument("--freeze-loc-epochs", type=int, default=None, help="warm-up epochs")
    ap.add_argument("--out-size", type=int, default=None, help="the ST-CNN's output canvas side")
    ap.add_argument("--epoch-images", type=int, default=None, help="training images per epoch")
    ap.add_argument("--limit-train", type=int, default=None, help="training set size")
    ap.add_argument("--limit-test", type=int, default=None, help="test images (default: 10k)")
    ap.add_argument("--synthetic", action="store_true", help="generated digits (a quick check)")
    ap.add_argument("--tag", default="paper", help="result files: accuracy-TAG.*")
    ap.add_argument("--runs", type=Path, default=Path("runs/accuracy"), help="training runs")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="where the tables go")
    args = ap.parse_args(argv)
    args.columns = [c.strip().lower() for c in args.columns.split(",") if c.strip()]
    bad = [c for c in args.columns if c not in COLUMNS]
    pair = args.pair.split(",")
    if bad or len(pair) != 2:
        ap.error(f"--columns takes {','.join(COLUMNS)}; --pair takes two zoo names")
    args.pair = pair
    args.epochs_of = _epochs(args.epochs, pair, ap)
    if args.synthetic:  # a seconds-long end-to-end check
        args.limit_train = args.limit_train or 64
        args.limit_test = args.limit_test or 32
    return args


def _epochs(spec: str, pair: list[str], ap) -> dict[str, int] | None:
    if spec == "auto":
        return None  # calibrated per column
    if "=" not in spec:
        return dict.fromkeys(pair, int(spec))
    given = dict(item.split("=", 1) for item in spec.split(","))
    if set(given) != set(pair):
        ap.error(f"--epochs names {sorted(given)}, the pair is {pair}")
    return {m: int(n) for m, n in given.items()}


def train_command(
    args: argparse.Namespace, model: str, column: str, out: Path, epochs: int
) -> list[str]:
    cmd = [sys.executable, "-m", "stn_deploy", "train", model, "--distortion", column]
    cmd += ["--epochs", str(epochs), "--optimizer", args.optimizer]
    cmd += ["--lr", str(args.lr), "--schedule", args.schedule, "--seed", str(args.seed)]
    cmd += ["--batch-size", str(args.batch_size), "--threads", "1"]
    cmd += ["--max-minutes", str(args.max_minutes), "--out", str(out), "--force", "--no-progress"]
    for flag in ("dropout", "epoch_images", "limit_train", "limit_test"):
        if getattr(args, flag) is not None:
            cmd += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    if args.synthetic:
        cmd.append("--synthetic")
    if model not in CNNS:
        for flag in RECIPE:
            if getattr(args, flag) is not None:
                cmd += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    return cmd


def _train_pair(commands: dict[str, list[str]], runs: Path, column: str) -> dict[str, dict]:
    """Run one training command per model at once; each run's metrics.json."""
    runs.mkdir(parents=True, exist_ok=True)
    procs = {}
    for m, cmd in commands.items():
        print("$", " ".join(cmd[1:]), flush=True)
        log = open(runs / f"{m}.log", "w")
        procs[m] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log)
    for m, (p, log) in procs.items():
        code = p.wait()
        log.close()
        if code != 0:
            raise SystemExit(f"training {m} on {column} failed: see {runs / m}.log")
    return {m: json.loads((runs / m / "metrics.json").read_text()) for m in commands}


def calibrate(args: argparse.Namespace, column: str) -> dict[str, int]:
    """Epochs per model that fill ``--max-minutes``, from a short run of each (both at once)."""
    n_train, n_test = (
        (args.limit_train or 64, args.limit_test or 32) if args.synthetic else (CALIBRATION_IMAGES)
    )
    cal = argparse.Namespace(**{**vars(args), "epoch_images": n_train, "limit_test": n_test})
    runs = args.runs / column / "calibration"
    cmds = {m: train_command(cal, m, column, runs / m, 1) for m in args.pair}
    metrics = _train_pair(cmds, runs, column)
    epoch_images = args.epoch_images or args.limit_train or 60000
    test_images = args.limit_test or 10000
    epochs = {}
    for m, met in metrics.items():
        h = met["history"][0]
        per_train = 1.0 / h["images_per_s"]
        per_test = max(0.0, h["seconds"] - n_train * per_train) / n_test
        per_epoch = epoch_images * per_train + test_images * per_test
        epochs[m] = max(1, int(BUDGET_USE * args.max_minutes * 60 / per_epoch))
        print(f"calibration {column} {m}: {per_epoch:.1f} s per epoch -> {epochs[m]} epochs")
    return epochs


def run_column(args: argparse.Namespace, column: str) -> list[dict]:
    """Train the pair on ``column`` at once; one row per model."""
    epochs = args.epochs_of or calibrate(args, column)
    runs = args.runs / column
    cmds = {m: train_command(args, m, column, runs / m, epochs[m]) for m in args.pair}
    metrics = _train_pair(cmds, runs, column)
    return [_row(args, column, m, metrics[m], epochs[m]) for m in args.pair]


def _row(args: argparse.Namespace, column: str, model: str, metrics: dict, planned: int) -> dict:
    hist = metrics["history"]
    role = 0 if model in CNNS else 1
    seen = sum(h["images_per_s"] * h["seconds"] for h in hist)  # ~images trained (eval excluded)
    return {
        "column": column,
        "model": model,
        "params": metrics["params"],
        "epochs": metrics["epochs_run"],
        "epochs_planned": planned,
        "train_minutes": round(metrics["train_seconds"] / 60, 1),
        "images_per_s": round(sum(h["images_per_s"] for h in hist) / len(hist)),
        "test_error": round(metrics["final"]["test_error"], 2),
        "best_epoch_error": round(min(h["test_error"] for h in hist), 2),
        "paper_error": PAPER[column][role],
        "stopped_early": metrics["stopped_early"],
        "curve": [
            (h["epoch"], round(sum(g["seconds"] for g in hist[: i + 1]) / 60, 1), h["test_error"])
            for i, h in enumerate(hist)
        ],
        "seen_images_approx": int(seen),
        "machine": metrics["machine"],
    }


def write_results(args: argparse.Namespace, rows: list[dict], wall_minutes: float) -> str:
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"accuracy-{args.tag}"
    for r in rows:  # each run's per-epoch metrics and STN picture beside the table
        run = args.runs / r["column"] / r["model"]
        shutil.copyfile(run / "metrics.json", args.out / f"{stem}-{r['column']}-{r['model']}.json")
        if (run / "rectification.png").exists():
            shutil.copyfile(run / "rectification.png", args.out / f"{stem}-{r['column']}.png")
    machine = rows[0]["machine"]
    command = "python benchmarks/accuracy.py " + " ".join(sys.argv[1:])
    result = {
        "benchmark": "distorted MNIST test error, CNN vs ST-CNN, same wall-clock budget per pair",
        "command": command.strip(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {**machine, "torch_threads": 1, "processes_in_parallel": 2},
        "wall_minutes": round(wall_minutes, 1),
        "rows": [{k: v for k, v in r.items() if k != "machine"} for r in rows],
    }
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = "\n".join(_markdown(args, rows, command.strip(), machine))
    (args.out / f"{stem}.md").write_text(text)
    return text


def _markdown(args, rows: list[dict], command: str, machine: dict) -> list[str]:
    recipe = (
        ", ".join(f"{k} {getattr(args, k)}" for k in RECIPE if getattr(args, k) is not None)
        or "none (defaults)"
    )
    data = "generated digits" if args.synthetic else "MNIST"
    sizing = (
        f" (--epochs auto: {BUDGET_USE:.0%} of the budget at the rate of a calibration run "
        f"of {CALIBRATION_IMAGES[0]} training and {CALIBRATION_IMAGES[1]} test images)"
        if args.epochs_of is None
        else ""
    )
    lines = [
        f"# Distorted {data}: {args.pair[0]} vs {args.pair[1]}, same budget per pair",
        "",
        f"Generated by `{command}`.",
        f"Each pair trained at once, one process and one torch thread each, budget "
        f"{args.max_minutes:g} min per model; {args.optimizer} lr {args.lr}, {args.schedule} "
        f"schedule sized to the planned epochs{sizing}, batch {args.batch_size}, seed {args.seed}; "
        f"ST-CNN recipe: {recipe}. Training images are re-distorted every epoch "
        f"({args.epoch_images or args.limit_train or 60000} per epoch, drawn from "
        f"{args.limit_train or 60000}); the test set is "
        f"{args.limit_test or 10000} {data} test images with the fixed distortion of the column. "
        "img/s is training throughput (the machine is shared: lower means contention).",
        "",
        "| column | model | params | epochs (planned) | train min | img/s | test error % "
        "| best epoch % | paper % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['column'].upper()} | {r['model']} | {r['params']:,} | {r['epochs']} "
            f"({r['epochs_planned']}) | {r['train_minutes']} | {r['images_per_s']} "
            f"| {r['test_error']:.2f} | {r['best_epoch_error']:.2f} | {r['paper_error']} |"
        )
    lines += ["", "Learning curves (epoch: minutes trained, test error %):", ""]
    for r in rows:
        curve = "; ".join(f"{e}: {m} min {err:.2f}" for e, m, err in r["curve"])
        lines.append(f"- {r['column'].upper()} {r['model']}: {curve}")
    lines += [
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, "
        f"Python {machine['python']}, {machine['platform']}.",
        "",
    ]
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    rows = [row for column in args.columns for row in run_column(args, column)]
    print(write_results(args, rows, (time.time() - t0) / 60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
