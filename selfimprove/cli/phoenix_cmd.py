"""`selfimprove phoenix serve`: a local Phoenix server for trying selfimprove without one of your own.

It runs the same launcher as the demo and the tests (selfimprove.telemetry.phoenix_server: the server from `.venv-phoenix`
or $SELFIMPROVE_PHOENIX_PYTHON as a child process on loopback), keeps its sqlite database in a folder you choose,
prints the URL on stdout once the server is healthy and stops it on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from selfimprove.cli.output import handle_errors, json_flag

app = typer.Typer(help="A local Phoenix server (sqlite on disk, loopback only) for trying selfimprove.",
                  no_args_is_help=True)


@app.command()
@handle_errors
def serve(
    port: Annotated[int, typer.Option(help="HTTP port on 127.0.0.1 (0: a free port).")] = 6006,
    workdir: Annotated[Path, typer.Option(help="Folder for Phoenix's sqlite database and its log (kept).")] = Path(
        ".phoenix"),
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the server to become healthy.")] = 120.0,
    json_output: Annotated[bool, typer.Option("--json", callback=json_flag, help="Print one JSON line {schema: selfimprove.phoenix."
                                                             "serve/1, url, traces_endpoint, workdir, log, pid} "
                                                             "instead of the bare URL.")] = False,
) -> None:
    """Start Phoenix and print its URL on stdout once it is healthy; run until Ctrl-C (or SIGTERM), then stop it.

    Point `selfimprove init --endpoint URL` and your app's OpenInference exporter (URL/v1/traces) at it.
    """
    from selfimprove.core.errors import SelfimproveError
    from selfimprove.telemetry.phoenix_server import log_tail, start_phoenix

    server = start_phoenix(workdir=workdir.resolve(), port=port, timeout=timeout)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if json_output:
            print(json.dumps({"schema": "selfimprove.phoenix.serve/1", "url": server.url,
                              "traces_endpoint": server.traces_endpoint, "workdir": str(server.workdir),
                              "log": str(server.log_path), "pid": server.pid}), flush=True)
        else:
            print(server.url, flush=True)
        while server.is_running():
            time.sleep(0.5)
        raise SelfimproveError(f"Phoenix stopped by itself; log: {server.log_path}\nlast lines:\n"
                               f"{log_tail(server.log_path)}", hint="see the log")
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()


def _interrupt(*_args) -> None:
    raise KeyboardInterrupt
