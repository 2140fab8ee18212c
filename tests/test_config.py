import pytest

from selfimprove.config.load import load_config
from selfimprove.core.errors import ConfigError


def write(path, text):
    path.write_text(text)
    return path


def test_defaults_and_seed_parameters(tmp_path):
    cfg = load_config(write(tmp_path / "support.toml", 'target = "support"\n'))
    assert (cfg.evaluate.alpha, cfg.evaluate.beta, cfg.evaluate.min_effect) == (0.05, 0.05, 0.15)
    assert cfg.telemetry.source == "phoenix"


def test_target_defaults_to_file_stem(tmp_path):
    assert load_config(write(tmp_path / "billing.toml", "")).target == "billing"


def test_extends_is_relative_to_the_file_and_overrides_win(tmp_path):
    (tmp_path / "shared").mkdir()
    write(tmp_path / "shared" / "base.toml", "[evaluate]\nconcurrency = 4\nalpha = 0.01\n[gate]\nmin_improvement = 0.1\n")
    child = write(tmp_path / "t.toml", 'extends = "shared/base.toml"\n[evaluate]\nconcurrency = 8\n')
    cfg = load_config(child, ["gate.min_improvement=0.05", "telemetry.phoenix.project=support"])
    assert cfg.evaluate.concurrency == 8      # child beats parent
    assert cfg.evaluate.alpha == 0.01         # inherited
    assert cfg.gate.min_improvement == 0.05   # --set beats both
    assert cfg.telemetry.phoenix.project == "support"  # a bare word is read as a string


def test_json_configs_extend_toml(tmp_path):
    write(tmp_path / "base.toml", "[update]\ntrials = 5\n")
    cfg = load_config(write(tmp_path / "t.json", '{"extends": "base.toml", "target": "t"}'))
    assert cfg.update.trials == 5


def test_cycles_are_refused(tmp_path):
    write(tmp_path / "a.toml", 'extends = "b.toml"\n')
    write(tmp_path / "b.toml", 'extends = "a.toml"\n')
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.toml")


def test_errors_name_file_key_expected_and_found(tmp_path):
    path = write(tmp_path / "bad.toml", '[evaluate]\nconcurrency = "lots"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = err.value.message
    assert str(path) in msg and "evaluate.concurrency" in msg and "integer" in msg and "'lots'" in msg


def test_unknown_keys_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="gate.min_improvment.*unknown"):
        load_config(write(tmp_path / "typo.toml", "[gate]\nmin_improvment = 0.1\n"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path / "broken.toml", "[gate\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_a_key_value_is_refused_where_an_env_var_name_belongs(tmp_path):
    path = write(tmp_path / "k.toml", '[llm.task]\napi_key_env = "' + 'sk-' + 'abcdefghijklmnopqrstuvwxyz"\n')
    with pytest.raises(ConfigError, match="llm.task.api_key_env"):
        load_config(path)


def test_bad_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="KEY.SUB=VALUE"):
        load_config(write(tmp_path / "t.toml", ""), ["evaluate.concurrency"])


def test_a_folder_in_the_working_directory_named_like_the_target_is_not_its_config(tmp_path, monkeypatch):
    """`selfimprove demo --workdir demo` left ./demo/ behind; the demo target then resolved to that folder."""
    from selfimprove.config.load import config_path

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo.toml").write_text('target = "demo"\n')
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    assert config_path(tmp_path, "demo") == tmp_path / "configs" / "demo.toml"
