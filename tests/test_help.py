"""Every command that takes a generator or segmenter spec says, in its --help, every form a spec takes."""

from __future__ import annotations

import argparse

from gandissect.cli import build_parser

FORMS = ("progan:FILE", "stylegan2:FILE", "ade20k:NAME", "file.py:factory", "'color'", "gandissect models")
NOT_SPECS = {("evaluate", "--model"), ("ship", "--segmenter")}  # a shipped name; a training run folder


def commands(parser: argparse.ArgumentParser, prefix: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, f"{prefix} {name}".strip())
    yield prefix, parser


def test_every_spec_flag_names_every_form():
    checked = []
    for command, parser in commands(build_parser()):
        for action in parser._actions:
            flag = next((o for o in action.option_strings if o in ("--model", "--segmenter")), None)
            if flag is None or (command.split()[-1], flag) in NOT_SPECS:
                continue
            missing = [form for form in FORMS if form not in (action.help or "")]
            assert not missing, f"gandissect {command} {flag} --help lacks {missing}"
            checked.append(f"{command} {flag}")
    assert {"dissect --model", "dissect --segmenter", "report --model", "causal --model", "causal --segmenter",
            "edit --model", "paint --model", "layers --model", "sample --model"} <= set(checked)
