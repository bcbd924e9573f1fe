"""The docs say what the code does: every ``pinsage-ray`` command in README.md and docs/*.md.

* Every command line in a fenced code block (``\\`` continuations joined, ``# comments``
  dropped, also after ``ray job submit --`` or inside ``"..."``) parses with the real
  argparse parser, and every option it names is spelled exactly as the parser has it (no
  abbreviations); a failure names the file and line.
* Every ``pinsage-ray SUBCOMMAND ... --flag`` in inline code (prose) names a real
  sub-command and real flags.
* The README's flow (prepare, inspect, train, embed, index, recommend, evaluate) RUNS as
  written in a folder holding a tiny ``interactions.parquet`` and ``item_features.parquet``
  (train gets tiny flags appended), in this process through ``pinsage_ray.cli.main`` on the
  session's Ray instance; each ends with a ``next: pinsage-ray ...`` line that parses too.
* The README's baseline list is the list the code has.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from pinsage_ray.cli import build_parser, main

pytestmark = [pytest.mark.ray]

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*(```|~~~)")
SEPARATORS = {"&&", "||", ";", "|"}
#: sub-commands of the README's flow that the test runs (others are only parsed: quickstart
#: takes minutes, serve blocks, the cluster doc's commands need a cluster)
RUN = ("prepare", "inspect", "train", "embed", "index", "recommend", "evaluate")
#: appended to the README's train line: the least training that runs every part of it
TINY_TRAIN = ["--num-workers", "1", "--num-epochs", "1", "--batches-per-epoch", "3",
              "--batch-size", "32", "--num-shared-negatives", "32", "--top-t", "8"]


def fenced_lines(path: Path):
    """``(line number, text)`` of each logical line in fenced blocks (continuations joined)."""
    inside, buf, start = False, "", 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if FENCE.match(line):
            inside, buf = not inside, ""
            continue
        if not inside:
            continue
        if not buf:
            start = number
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        yield start, buf + line
        buf = ""


def commands_in(text: str):
    """The argv (after ``pinsage-ray``) of each command in a shell line."""
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError:  # not shell (e.g. a Python line with an apostrophe)
        return
    i = 0
    while i < len(tokens):
        if tokens[i] == "pinsage-ray":
            j = i + 1
            while j < len(tokens) and tokens[j] not in SEPARATORS:
                j += 1
            yield tokens[i + 1:j]
            i = j
            continue
        if tokens[i].startswith("pinsage-ray "):  # ray exec cluster.yaml "pinsage-ray ..."
            yield from commands_in(tokens[i])
        i += 1


def doc_commands() -> list[tuple[str, list[str]]]:
    """``("FILE:LINE", argv)`` of every fenced ``pinsage-ray`` command in the docs."""
    return [(f"{path.relative_to(REPO)}:{number}", argv) for path in DOCS
            for number, line in fenced_lines(path) for argv in commands_in(line)]


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if a.dest == "command").choices


def parse_error(argv: list[str]) -> str | None:
    """Why ``pinsage-ray ARGV`` does not parse (or names an option not spelled exactly as
    the parser has it); None when it is fine."""
    parser = build_parser()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            args = parser.parse_args(argv)
        except SystemExit as exit_:
            return err.getvalue().strip() or f"exit {exit_.code}"
    known = {s for a in parser._actions for s in a.option_strings}
    known |= {s for a in subparsers(parser)[args.command]._actions for s in a.option_strings}
    inexact = [t.split("=")[0] for t in argv if re.match(r"^--?[a-zA-Z]", t)
               and t.split("=")[0] not in known]
    return f"options not spelled as the parser has them: {inexact}" if inexact else None


def test_docs_have_commands():
    found = doc_commands()
    assert {argv[0] for _, argv in found if argv} >= set(RUN), found


@pytest.mark.parametrize("where,argv", doc_commands(), ids=lambda v: str(v)[:60])
def test_every_doc_command_parses(where, argv):
    error = parse_error(argv)
    assert error is None, f"{where}: `pinsage-ray {shlex.join(argv)}`: {error}"


def test_inline_commands_name_real_flags():
    parser = build_parser()
    commands = subparsers(parser)
    top = {s for a in parser._actions for s in a.option_strings}
    bad = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        # prose only: blank out fenced blocks, keeping the line count
        text = re.sub(r"(?ms)^\s*```.*?^\s*```", lambda m: "\n" * m.group(0).count("\n"), text)
        for span in re.finditer(r"`(pinsage-ray\s[^`]+)`", text):
            line = text.count("\n", 0, span.start()) + 1
            words = span.group(1).split()[1:]
            sub = next((w for w in words if not w.startswith("-")), None)
            if sub is None:
                options = top
            elif sub not in commands:
                bad.append(f"{path.name}:{line}: unknown command {sub!r} in `{span.group(1)}`")
                continue
            else:
                options = top | {s for a in commands[sub]._actions for s in a.option_strings}
            for word in words:
                flag = word.strip("[],").split("=")[0]
                if re.match(r"^--?[a-zA-Z]", flag) and flag not in options:
                    bad.append(f"{path.name}:{line}: {flag} is not a flag of "
                               f"`pinsage-ray {sub or ''}` (in `{span.group(1)}`)")
    assert not bad, "\n".join(bad)


def test_readme_baselines_are_the_codes():
    from pinsage_ray.evaluation.harness import BASELINES

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    listed = re.search(r"# \(((?:[a-z0-9]+ ?)+)\)", readme)
    assert listed, "README: the evaluate line's '# (baseline baseline ...)' list is gone"
    assert sorted(listed.group(1).split()) == sorted(BASELINES)


# --------------------------------------------------------------------------- the flow runs
def hinted(out: str) -> list[list[str]]:
    """The argv of each ``next: pinsage-ray ...`` line in a command's output."""
    return [list(commands_in(line.split("next: ", 1)[1]))[0] for line in out.splitlines()
            if line.startswith("next: pinsage-ray ")]


def test_readme_flow_runs_as_written(ray_session, tiny_inputs, tmp_path, monkeypatch, capsys):
    shutil.copy(tiny_inputs["interactions"], tmp_path / "interactions.parquet")
    shutil.copy(tiny_inputs["item_features"], tmp_path / "item_features.parquet")
    monkeypatch.chdir(tmp_path)  # the README's relative paths, as a user types them
    flow = [(where, argv) for where, argv in doc_commands()
            if where.startswith("README.md") and argv and argv[0] in RUN]
    assert {argv[0] for _, argv in flow} == set(RUN), flow
    for where, argv in flow:
        argv = argv + TINY_TRAIN if argv[0] == "train" else argv
        code = main(argv)
        cap = capsys.readouterr()
        assert code == 0, f"{where}: `pinsage-ray {shlex.join(argv)}` failed:\n{cap.err[-3000:]}"
        if argv[0] in ("prepare", "inspect"):
            assert json.loads(cap.out)["items"] == 300, cap.out
        if argv[0] == "recommend":
            for line in cap.out.splitlines():
                answer = json.loads(line)
                assert len(answer.get("similar", answer.get("recommended"))) == 10, line
        nxt = hinted(cap.out) + hinted(cap.err)
        assert nxt, f"{where}: `pinsage-ray {argv[0]}` printed no next command:\n{cap.out}{cap.err}"
        for hint in nxt:
            hint = ["runs/next" if a == "RUN_DIR" else a for a in hint]
            assert parse_error(hint) is None, f"{argv[0]}'s hint `{shlex.join(hint)}`"
    assert (tmp_path / "runs" / "mine" / "index").is_dir()
