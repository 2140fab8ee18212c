"""The commented config that `selfimprove init` writes for a new target."""

TEMPLATE = '''# selfimprove target config for "{target}".
# Inherit shared settings with:  extends = "base.toml"   (resolved relative to this file)
# Override any key on the command line:  --set evaluate.concurrency=8
target = "{target}"

[telemetry]
source = "{source}"                 # phoenix | arize | file

[telemetry.phoenix]
endpoint = "{endpoint}"             # your Phoenix server
project = "{project}"               # the Phoenix project holding this call's spans
span_filter = "span_kind == 'LLM'"  # which spans are this call (a Phoenix span query condition)
# api_key_env = "PHOENIX_API_KEY"   # name of the env var holding the key, only if auth is on

[telemetry.file]
path = ""                           # parquet or JSONL of OpenInference spans (source = "file")

[evals]
include = []                        # evals that count; empty = every eval found on the spans
# primary = "correctness"           # the eval promotion must improve

[llm.task]                          # replays candidates; never put a key here, only the variable's NAME
api_key_env = "{api_key_env}"
{base_url_line}

[llm.optimizer]                     # writes the prompt edits
model = "{optimizer_model}"
api_key_env = "{api_key_env}"
{base_url_line}

{judge_section}

# [llm.prices.gpt-4o-mini]          # US dollars per million tokens, for cost accounting and the gate
# input = 0.15
# output = 0.60

[split]
test_size = 0.3                     # held-out share, split by trace
seed = 0

# [split.embeddings]                # snapshot --diverse clusters these embeddings (absent: TF-IDF, offline)
# base_url = "https://api.openai.com/v1"
# model = "text-embedding-3-small"
# api_key_env = "OPENAI_API_KEY"

[update]
trials = 3                          # minibatches per step, merged into one candidate
max_calls = 400                     # LLM-call budget of one update
constitution = []                   # lines every candidate must keep verbatim
# weights = {{ policy_compliance = 2 }} # eval -> weight in the optimizer's reward (absent: 1)
# guardrails = ["tone"]             # evals a new incumbent may not regress on, whatever it gains elsewhere
# metaprompt = "compact"           # a short update request for small optimizer models (default "full")

[evaluate]
concurrency = 32
max_calls = 2000
alpha = 0.05                        # false-promotion rate, shared by the candidates and the planned looks
beta = 0.05                         # futility error of the sequential test (its power is at most 1 - beta)
min_effect = 0.15                   # the smallest improvement worth detecting (`selfimprove power` sizes it)
cluster_by = "trace"                # turns of one trace are not independent: resampled and tested together

[gate]
min_improvement = 0.02              # the primary eval must improve at least this much, significantly
default_max_regression = 0.02       # allowed drop on any other eval
looks = 1                           # planned re-evaluations of one candidate against one baseline (cron)
# max_cost_per_call_usd = 0.01
max_failed_pairs = 0.05             # refuse when more than this share of held-out pairs was lost to failed calls
'''

_JUDGE_DEFAULT = '''# [llm.judge]                       # override the captured judge model (recorded in the report)
# model = "gpt-4.1"'''


def render_config(*, target: str, source: str, endpoint: str, project: str, base_url: str | None = None,
                  api_key_env: str = "OPENAI_API_KEY", optimizer_model: str = "gpt-4.1") -> str:
    """The config text. `base_url` (an OpenAI-compatible endpoint: a gateway, vLLM, the simulator) is written
    for the task, optimizer and judge calls alike; without it they go to OpenAI."""
    if base_url:
        base_url_line = f'base_url = "{base_url}"'
        judge = (f'[llm.judge]                         # the judges run here too (models: the captured evals\' own)\n'
                 f'{base_url_line}\napi_key_env = "{api_key_env}"')
    else:
        base_url_line, judge = '# base_url = "https://api.openai.com/v1"', _JUDGE_DEFAULT
    return TEMPLATE.format(target=target, source=source, endpoint=endpoint, project=project,
                           api_key_env=api_key_env, base_url_line=base_url_line, optimizer_model=optimizer_model,
                           judge_section=judge)
