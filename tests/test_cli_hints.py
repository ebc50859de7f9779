"""Every `python -m pipeline ...` command an error message suggests is one the CLI accepts (a
hint naming a stage or option that does not exist sends a user the wrong way)."""
import ast
import re
from pathlib import Path

import pytest

from pipeline import matrix as mx
from pipeline.cli import parser

HINT = re.compile(r'`python -m pipeline ([^`]*)`')
SAMPLE = {'--scale': 'smoke', '--run': 'r50_v1', '--seed': '0'}


def _strings(path: Path):
    """The string literals of a module's error messages (raise, print), f-strings with their
    fields as '{}' (adjacent literals are joined by the parser, so a hint split over lines
    comes out whole)."""
    for node in ast.walk(ast.parse(path.read_text())):
        is_print = isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'print'
        if not (isinstance(node, ast.Raise) or is_print):
            continue
        for part in ast.walk(node):
            if isinstance(part, ast.Constant) and isinstance(part.value, str):
                yield part.value
            elif isinstance(part, ast.JoinedStr):
                yield ''.join(v.value if isinstance(v, ast.Constant) else '{}' for v in part.values)


def hints():
    for path in sorted((mx.ROOT / 'pipeline').rglob('*.py')) + sorted((mx.ROOT / 'loce').rglob('*.py')):
        for text in _strings(path):
            for match in HINT.finditer(text):
                yield f'{path.relative_to(mx.ROOT)}: {match.group(1)}'


def _args(hint: str) -> list[str]:
    args = hint.split()
    for i, arg in enumerate(args):
        if arg in ('{}', '...') and i:
            args[i] = SAMPLE.get(args[i - 1], 'x')
    return args


def test_there_are_hints_to_check():
    assert len(list(hints())) >= 8


@pytest.mark.parametrize('hint', list(hints()))
def test_every_suggested_command_parses(hint):
    where, command = hint.split(': ', 1)
    if command == '{}':  # the user's own command line echoed back (after Ctrl-C): it parsed
        return
    if command.split()[-1] == '...':  # "train ...": only the stage is named
        stages = parser()._subparsers._group_actions[0].choices
        assert command.split()[0] in stages, where
        return
    args = _args(command)
    try:
        parser().parse_args(args)
    except SystemExit as err:
        pytest.fail(f'{where}: `python -m pipeline {command}` is rejected by the CLI ({err})')
