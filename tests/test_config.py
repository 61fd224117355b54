"""Config loading, dotted-key overrides, and the resolved-config file."""
import pytest
import yaml

from speechllm.utils.config import ConfigError, load_config, parse_overrides, save_config


def test_overrides_parse_yaml_scalars_and_dotted_keys(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("encoder: conformer\nencoder_conf:\n  num_blocks: 12\n  dropout_rate: 0.1\n")
    cfg = load_config(conf, ["--encoder_conf.num_blocks", "4", "--max_epoch=3", "--specaug", "false",
                             "--new.deep.key", "[1, 2]"])
    assert cfg["encoder_conf"] == {"num_blocks": 4, "dropout_rate": 0.1}
    assert cfg["max_epoch"] == 3 and cfg["specaug"] is False
    assert cfg["new"] == {"deep": {"key": [1, 2]}}


def test_override_without_value_is_an_error():
    with pytest.raises(ConfigError, match="has no value"):
        parse_overrides(["--lr"])
    with pytest.raises(ConfigError, match="expected --key value"):
        parse_overrides(["lr", "3"])


def test_override_into_a_scalar_names_the_key(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("encoder: conformer\n")
    with pytest.raises(ConfigError, match="encoder"):
        load_config(conf, ["--encoder.size", "3"])


def test_invalid_yaml_names_file_and_line(tmp_path):
    conf = tmp_path / "bad.yaml"
    conf.write_text("a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_config(conf)


def test_save_config_round_trips(tmp_path):
    cfg = {"a": {"b": [1, 2]}, "c": "x"}
    save_config(cfg, tmp_path / "exp" / "config.yaml")
    assert yaml.safe_load((tmp_path / "exp" / "config.yaml").read_text()) == cfg
    assert not list((tmp_path / "exp").glob("*.tmp"))
