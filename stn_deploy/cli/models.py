"""``stn-deploy models``: the zoo with parameter counts."""

from __future__ import annotations

import json

import click

from stn_deploy.cli.options import Command, json_option


@click.command("models", cls=Command)
@click.option(
    "--in-size",
    type=click.IntRange(8, 1024),
    default=28,
    show_default=True,
    help="Square input size the parameter count is given for (28 plain, 42 RTS, 60 TC).",
)
@json_option()
def models_cmd(in_size: int, as_json: bool) -> None:
    """List the model zoo with parameter counts."""
    from stn_deploy.pytorch.models.zoo import ZOO, build_model, count_parameters

    rows = [
        {
            "name": e.name,
            "transform": e.transform,
            "params": count_parameters(build_model(e.name, in_size=in_size)),
            "description": e.description,
        }
        for e in ZOO.values()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(
        f"{'name':<24}{'transform':<12}{'params':>9}  description (input 1x{in_size}x{in_size})"
    )
    for r in rows:
        click.echo(f"{r['name']:<24}{r['transform']:<12}{r['params']:>9,}  {r['description']}")
