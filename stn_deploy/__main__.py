"""``python -m stn_deploy`` runs the CLI."""

from stn_deploy.cli import main

main(prog_name="stn-deploy")
