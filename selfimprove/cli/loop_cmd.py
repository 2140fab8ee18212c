"""`run` (the whole loop, for cron) and `demo` (the whole loop on a local Phoenix and the simulator)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from selfimprove.cli.common import BatchOpt, JsonOpt, RootOpt, SetOpt, TargetOpt, WaitOpt, gate_overrides
from selfimprove.cli.output import handle_errors


@handle_errors
def run(
    since: Annotated[str | None, typer.Option(help="Start of the pull window (default: the target's cursor, "
                                                      "where the last pull ended).")] = None,
    until: Annotated[str | None, typer.Option(help="End of the pull window, exclusive (default: now).")] = None,
    limit: Annotated[int | None, typer.Option(help="Pull at most this many spans.", min=1)] = None,
    trials: Annotated[int | None, typer.Option(help="Update trials (default: config update.trials).",
                                                  min=1)] = None,
    max_calls: Annotated[int | None, typer.Option(help="LLM-call budget of the update (default: config "
                                                          "update.max_calls).", min=1)] = None,
    min_improvement: Annotated[float | None, typer.Option(help="Required gain on the primary eval (default: "
                                                                  "config gate.min_improvement).")] = None,
    max_failed_pairs: Annotated[float | None, typer.Option(
        min=0, max=1, help="Refuse when more than this share of the held-out pairs was lost to failed calls "
                           "(default: config gate.max_failed_pairs, 0.05).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the update's minibatches and search.")] = 0,
    candidates: Annotated[str, typer.Option(
        help="What evaluate tests on held-out data: best (default: update's pick on its validation slice), all "
             "(every candidate that passed its guards; the gate divides alpha by their number), or an id.")] = "best",
    force_update: Annotated[bool, typer.Option("--force-update", help="Update even when the [trigger] says skip "
                                                                      "(few new samples, or a high score).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Run everything but write no build and move no "
                                                            "ref.")] = False,
    push_phoenix: Annotated[bool, typer.Option("--push-phoenix", help="On promotion, also create a Phoenix "
                                                                      "prompt version tagged production.")] = False,
    all_targets: Annotated[bool, typer.Option("--all", help="Run every target in configs/ (not the base* files "
                                                            "they extend), each under its own lock; one target's "
                                                            "failure does not stop the others.")] = False,
    targets: Annotated[str | None, typer.Option(help="Run the targets whose configs match this glob (relative to "
                                                     "--root), e.g. 'configs/support-*.toml'; as --all.")] = None,
    parallel: Annotated[int, typer.Option(help="With --all/--targets: targets run at the same time.",
                                          min=1)] = 2,
    provider_concurrency: Annotated[int | None, typer.Option(
        help="At most this many LLM calls in flight per provider endpoint, shared by every target of this "
             "process (default: each stage's own concurrency, under the adaptive 429 limiter).", min=1)] = None,
    batch: BatchOpt = None,
    target: TargetOpt = None,
    set_: SetOpt = None,
    root: RootOpt = Path("."),
    wait: WaitOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Run the whole loop once, for cron: pull (from the cursor) → snapshot → update → evaluate → promote,
    under the target's lock, within the configured budgets.

    With --all (or --targets GLOB): every target's loop, `--parallel` at a time, one summary; each target has its
    own lock, the provider's concurrency is shared (--provider-concurrency caps it), and a failed target is
    reported while the others go on. Exit code: the first failed target's, else the first non-zero outcome's
    (3, 5), else 0.

    Before the update: an active rollout (`selfimprove rollout start`) is judged on its online evidence instead
    (promoted, rolled back, or it continues; no update meanwhile); otherwise the [monitor] compares production's
    online score on the new calls with the held-out score its build was promoted on, and a significant drop beyond
    monitor.margin is a regression (monitor.on_regression: report, update, or rollback to the parent build).

    Exit codes: 0 promoted, skipped by the [trigger], nothing new, or a rollout that continues or was promoted;
    3 the gate refused (production unchanged) or a rollout's challenger was rolled back; 5 production regressed
    online (and no promotion replaced it); 1/2/4 as for every command.
    """
    from selfimprove.cli.output import log_line
    from selfimprove.cli.render import render_result
    from selfimprove.cli.views.builds import render_loop, render_run_all
    from selfimprove.core.errors import GateFailed, UsageError
    from selfimprove.stages.loop import run_loop
    from selfimprove.stages.run_all import outcome_code

    if all_targets or targets:
        from selfimprove.stages.run_all import find_configs, run_all

        if target:
            raise UsageError("--target names one target; --all and --targets run several",
                             hint="drop --target, or drop --all/--targets")
        many = run_all(find_configs(root, targets), root=root, parallel=parallel,
                       provider_concurrency=provider_concurrency, overrides=gate_overrides(set_, max_failed_pairs),
                       since=since, until=until, limit=limit, trials=trials, max_calls=max_calls,
                       min_improvement=min_improvement, seed=seed, candidates=candidates, dry_run=dry_run,
                       push_phoenix=push_phoenix, force_update=force_update, wait=wait, batch=batch, log=log_line)
        render_result("selfimprove.run-all/1", many, json_output, render_run_all)
        if many.exit_code:
            raise typer.Exit(many.exit_code)
        return
    if provider_concurrency is not None:
        from selfimprove.llm.throttle import cap_concurrency

        cap_concurrency(provider_concurrency)
    result = run_loop(root=root, target=target, overrides=gate_overrides(set_, max_failed_pairs), since=since, until=until, limit=limit,
                      trials=trials, max_calls=max_calls, min_improvement=min_improvement, seed=seed,
                      candidates=candidates, dry_run=dry_run, push_phoenix=push_phoenix, force_update=force_update,
                      wait=wait, batch=batch, log=log_line)
    render_result("selfimprove.run/1", result, json_output, render_loop)
    code = outcome_code(result)  # 5 regressed online, 3 refused or rolled back
    if result.outcome == "refused" and code == 3:
        refusal = result.refusal or {}
        raise GateFailed(refusal.get("message", "the gate refused the candidate"), reasons=refusal.get("reasons"))
    if code:
        raise typer.Exit(code)


@handle_errors
def demo(
    workdir: Annotated[Path, typer.Option(help="Folder for the demo workspace; each demo writes a fresh "
                                              "sub-folder (configs/, runs/, prompts/, phoenix/).")] = Path(
        ".selfimprove-demo"),
    world: Annotated[str, typer.Option(help="Simulator world: support or routing.")] = "support",
    traffic: Annotated[int | None, typer.Option(help="Production calls (default 160; 30 with --local-model).",
                                                min=20)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulator and the loop.")] = 0,
    keep_running: Annotated[bool, typer.Option("--keep-running", help="Leave Phoenix up after the demo for "
                                                                      "browsing; Ctrl-C stops it.")] = False,
    real: Annotated[bool, typer.Option("--real", help="Run on a REAL MODEL at https://api.openai.com/v1 (key in "
                                                      "OPENAI_API_KEY or --api-key-env). Spends money.")] = False,
    base_url: Annotated[str | None, typer.Option(help="Any OpenAI-compatible base_url: run on a REAL MODEL "
                                                      "there (implies --real). Spends money.")] = None,
    api_key_env: Annotated[str | None, typer.Option(help="NAME of the variable holding the endpoint's key "
                                                         "(default OPENAI_API_KEY); the key is never written "
                                                         "anywhere.")] = None,
    task_model: Annotated[str | None, typer.Option(help="Real task model (default gpt-4o-mini).")] = None,
    judge_model: Annotated[str | None, typer.Option(help="Real judge model for the world's evals (default "
                                                         "gpt-4.1-mini: not the task model).")] = None,
    optimizer_model: Annotated[str | None, typer.Option(help="Real optimizer model (default "
                                                             "gpt-4.1-mini).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Accept a real run's call/cost estimate without "
                                                          "asking.")] = False,
    local_model: Annotated[bool, typer.Option("--local-model", help="Run on a REAL small model on this machine "
                                              "(llama-server with Qwen 0.5B as task model, Qwen 1.5B as optimizer; "
                                              "`make setup-real` first): no key, no cost, 10-20 minutes; code "
                                              "evals decide.")] = False,
    batch: Annotated[bool, typer.Option("--batch", help="Send the loop's replays and judge calls through the "
                                        "endpoint's Batch API (the simulator serves one; docs/batch.md): half "
                                        "price; against a real provider a batch may take hours.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """The whole loop in about a minute with no API key: a local Phoenix, the built-in SIMULATOR, production
    traffic with a deliberately weak prompt, then pull → snapshot → update → evaluate → promote. Shows baseline
    vs promoted on held-out data with the CI, the prompt diff, the build chain, the Phoenix UI address and the
    HTML report. Stops every process it started.

    With --real (OpenAI; defaults: task gpt-4o-mini, judge gpt-4.1-mini, optimizer gpt-4.1-mini) or --base-url
    URL the same demo runs on a REAL MODEL: the world's inputs and eval templates, real calls and real
    phoenix-evals judges. It first prints the call/cost estimate and needs --yes or a confirmation. Without
    --real/--base-url it is always the simulator, even with OPENAI_API_KEY set.

    With --local-model the loop runs on a REAL MODEL on this machine without a key: llama-server with Qwen2.5-Coder
    0.5B answering customer messages and 1.5B as optimizer (`make setup-real` builds and fetches them once), judged
    by deterministic code evals (replies under 50 words; no Markdown), labelled REAL MODEL (local qwen0.5b)."""
    import os
    import sys

    from selfimprove.cli.output import console
    from selfimprove.cli.render import render_result
    from selfimprove.cli.views.builds import render_demo
    from selfimprove.demo.endpoint import resolve_endpoint
    from selfimprove.demo.run import run_demo

    say = lambda text: console().print(text, markup=False)
    if local_model:
        from selfimprove.core.errors import UsageError
        from selfimprove.demo.local_demo import run_local_demo

        if batch:
            raise UsageError("--local-model has no Batch API (llama-server answers online only)",
                             hint="drop --batch, or run the simulator demo with --batch")
        if real or base_url or api_key_env or task_model or judge_model or optimizer_model or world != "support":
            raise UsageError("--local-model runs its own task and local models",
                             hint="drop --real, --base-url, --api-key-env, --world and the model options")
        run_local_demo(workdir=workdir, traffic=traffic or 30, seed=seed, keep_running=keep_running, say=say,
                       on_result=lambda result: render_result("selfimprove.demo/1", result, json_output, render_demo))
        return
    traffic = traffic or 160
    endpoint = resolve_endpoint(world, real=real, base_url=base_url, api_key_env=api_key_env,
                                task_model=task_model, judge_model=judge_model, optimizer_model=optimizer_model)
    if not endpoint.real and os.environ.get("OPENAI_API_KEY"):
        say("OPENAI_API_KEY is set: `selfimprove demo --real` runs this demo on a real model (it spends money).")
    confirm = (lambda q: typer.confirm(q, err=True)) if sys.stdin.isatty() else None
    run_demo(workdir=workdir, world=world, traffic=traffic, seed=seed, endpoint=endpoint, yes=yes, confirm=confirm,
             keep_running=keep_running, say=say, batch=batch,
             on_result=lambda result: render_result("selfimprove.demo/1", result, json_output, render_demo))
