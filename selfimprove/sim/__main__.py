"""`python -m selfimprove.sim serve …`: the simulator CLI without the rest of selfimprove's CLI."""

from selfimprove.cli.sim import app

if __name__ == "__main__":
    app(prog_name="python -m selfimprove.sim")
