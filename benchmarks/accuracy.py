"""Paper comparison on RTS MNIST: the CNN baseline vs the ST-CNN (mnist-affine), same budget.

Both models train at the same time, one process and one torch thread each, so each gets one of
the machine's two cores for the same wall-clock budget and the same number of epochs and
hyper-parameters. Writes ``benchmarks/results/accuracy.{json,md}`` with the machine description.

Run:  .venv/bin/python benchmarks/accuracy.py            (needs `stn-deploy data fetch` first)
      .venv/bin/python benchmarks/accuracy.py --epochs 2 --out /tmp/acc   (a quick look)
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
PAPER = {"mnist-cnn": 0.8, "mnist-affine": 0.5}  # Jaderberg et al. 2015, Table 1, RTS


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--max-minutes", type=float, default=30.0, help="training budget per model")
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--lr", type=float, default=0.003)
    ap.add_argument("--schedule", default="onecycle")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", default="mnist-cnn,mnist-affine")
    ap.add_argument("--dropout", type=float, default=None, help="override both models' dropout")
    ap.add_argument(
        "--padding-mode", default=None, help="sampler padding of the STN models (not the CNN)"
    )
    ap.add_argument("--loc-lr-scale", type=float, default=None, help="STN localisation lr factor")
    ap.add_argument("--tag", default="", help="suffix for the result files, e.g. 'no-dropout'")
    ap.add_argument(
        "--runs", type=Path, default=Path("runs/accuracy"), help="where the training runs go"
    )
    ap.add_argument("--out", type=Path, default=HERE / "results", help="where the tables go")
    args = ap.parse_args()

    models = args.models.split(",")
    cli = [sys.executable, "-m", "stn_deploy"]
    procs = {}
    t0 = time.time()
    for m in models:
        cmd = (
            cli
            + [
                "train",
                "--model",
                m,
                "--distortion",
                "rts",
                "--epochs",
                str(args.epochs),
                "--optimizer",
                args.optimizer,
                "--lr",
                str(args.lr),
                "--schedule",
                args.schedule,
                "--batch-size",
                str(args.batch_size),
                "--seed",
                str(args.seed),
                "--threads",
                "1",
                "--max-minutes",
                str(args.max_minutes),
                "--out",
                str(args.runs / m),
                "--force",
                "--no-progress",
            ]
            + ([] if args.dropout is None else ["--dropout", str(args.dropout)])
        )
        if args.padding_mode and m != "mnist-cnn":
            cmd += ["--padding-mode", args.padding_mode]
        if args.loc_lr_scale is not None and m != "mnist-cnn":
            cmd += ["--loc-lr-scale", str(args.loc_lr_scale)]
        args.runs.mkdir(parents=True, exist_ok=True)
        log = open(args.runs / f"{m}.log", "w")
        print("$", " ".join(cmd[1:]), flush=True)
        procs[m] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log)
    failed = False
    for p, log in procs.values():
        failed |= p.wait() != 0
        log.close()
    if failed:
        print(f"a training run failed: see {args.runs}/*.log", file=sys.stderr)
        return 1

    rows = []
    for m in models:
        metrics = json.loads((args.runs / m / "metrics.json").read_text())
        best = min(h["test_error"] for h in metrics["history"])
        rows.append(
            {
                "model": m,
                "params": metrics["params"],
                "epochs": metrics["epochs_run"],
                "train_minutes": round(metrics["train_seconds"] / 60, 1),
                "test_error": round(metrics["final"]["test_error"], 2),
                "best_epoch_error": round(best, 2),
                "paper_error": PAPER.get(m),
                "stopped_early": metrics["stopped_early"],
            }
        )
    machine = metrics["machine"]
    result = {
        "benchmark": "RTS MNIST test error, CNN baseline vs ST-CNN (mnist-affine), same budget",
        "command": "python benchmarks/accuracy.py " + " ".join(sys.argv[1:]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "test_set": "10,000 MNIST test images, RTS-distorted with the fixed seed",
        "machine": {**machine, "torch_threads": 1, "processes_in_parallel": len(models)},
        "wall_minutes": round((time.time() - t0) / 60, 1),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "accuracy" + (f"-{args.tag}" if args.tag else "")
    for m in models:  # keep each run's per-epoch metrics and STN picture beside the table
        shutil.copyfile(args.runs / m / "metrics.json", args.out / f"{stem}-{m}-metrics.json")
        if (args.runs / m / "rectification.png").exists():
            shutil.copyfile(
                args.runs / m / "rectification.png", args.out / f"{stem}-{m}-rectification.png"
            )
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# RTS MNIST: CNN baseline vs ST-CNN, same budget",
        "",
        f"Generated by `{result['command'].strip()}`; each model trained in its own process with one torch",
        f"thread ({len(models)} at once), for at most {args.max_minutes:g} minutes and {args.epochs} epochs "
        f"({args.optimizer}, lr {args.lr}, {args.schedule} schedule, batch {args.batch_size}, seed {args.seed}, "
        f"dropout {'0.5 (the tutorial network as written)' if args.dropout is None else args.dropout}, "
        f"STN padding {args.padding_mode or 'zeros'}, localisation lr x{args.loc_lr_scale or 1.0}).",
        "Training images are re-distorted every epoch; the test set is the 10k MNIST test images with a fixed",
        "RTS distortion (rotation ±45°, scale 0.7–1.2, random placement on 42×42).",
        "",
        "| model | params | epochs | train min | test error % (final) | best epoch % | paper % |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['epochs']} | {r['train_minutes']} | {r['test_error']:.2f} "
            f"| {r['best_epoch_error']:.2f} | {r['paper_error']} |"
        )
    lines += [
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, "
        f"Python {machine['python']}, {machine['platform']}.",
        "",
    ]
    (args.out / f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
