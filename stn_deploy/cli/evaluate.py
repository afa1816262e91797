"""``stn-deploy evaluate MODEL``: test error of a torch model on a distorted MNIST test set."""

from __future__ import annotations

import json
from pathlib import Path

import click

from stn_deploy.cli.options import (
    Command,
    cache_dir_option,
    check_model_source,
    data_dir_option,
    distortion_option,
    json_option,
    limit_test_option,
    model_source,
    seed_option,
    synthetic_option,
)


@click.command("evaluate", cls=Command)
@model_source()
@distortion_option(None, "Test set variant [default: the one the model was trained on, else none].")
@seed_option(None, "Test-set seed [default: the training seed].")
@data_dir_option
@cache_dir_option
@synthetic_option
@limit_test_option
@json_option("Print JSON.")
def evaluate_cmd(
    model: str,
    weights: Path | None,
    input_shape: str | None,
    trust_factory: bool,
    as_json: bool,
    **kw,
) -> None:
    """Test error of MODEL on a distorted MNIST test set.

    MODEL is a checkpoint file, a zoo name with --weights, or a module:callable factory
    with --input-shape (fed 0..1 pixels: a factory carries no normalisation) or with
    --weights. A checkpoint naming a factory needs --trust-factory.

    Example: stn-deploy evaluate runs/rts/checkpoint.pt
    """
    from stn_deploy.pytorch.evaluate import evaluate_model
    from stn_deploy.pytorch.models.loading import load_model

    check_model_source(model, weights, input_shape, trust_factory)
    loaded = load_model(
        model, checkpoint=weights, input_shape=input_shape, trust_factory=trust_factory
    )
    result = evaluate_model(loaded, **kw)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(
            f"{result.model} on {result.distortion.upper()} test set (seed {result.seed}, "
            f"{result.images} images): error {result.test_error:.2f}%, loss {result.test_loss:.4f}"
        )
