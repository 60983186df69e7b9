import argparse
import importlib

import pytest

from ml.cli import COMMANDS, main

CONTRACT = ("predict", "segment", "synth", "train", "evaluate", "convert-hpa-weights", "train-seg")


def test_every_documented_command_is_registered():
    assert set(CONTRACT) <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_module_lives_in_ml_cli_and_builds_its_parser(name):
    module_name = COMMANDS[name][0]
    assert module_name.startswith("ml.cli.")
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser()
    module.configure_parser(parser)
    assert callable(module.run)


def test_an_unknown_command_prints_the_usage_and_exits_with_2(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["no-such-command"])
    assert stop.value.code == 2
    assert "invalid choice: 'no-such-command'" in capsys.readouterr().err
