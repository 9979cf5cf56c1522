"""`graphdiff train --help` and `generate --help`: every option has a help line that states its default."""
import argparse

import pytest

from graphdiff.lm import cli


@pytest.mark.parametrize("add", [cli.add_train_arguments, cli.add_generate_arguments], ids=["train", "generate"])
def test_every_option_has_help_with_its_default(add):
    p = argparse.ArgumentParser()
    add(p)
    for action in p._actions:
        if action.dest == "help":
            continue
        assert action.help, f"{action.option_strings} has no help line"
        assert "default" in action.help, f"{action.option_strings}: help does not state the default"
