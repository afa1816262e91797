"""``python -m stn_deploy`` runs the CLI."""

from stn_deploy.cli import main

if __name__ == "__main__":  # importing this module (the torch-boundary test does) runs nothing
    main(prog_name="stn-deploy")
