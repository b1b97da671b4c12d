"""The README and docs/ run as written: every code block runs at tiny sizes, unless it is marked as not run.

A block is marked by ``<!-- not run in CI: REASON -->`` on the line just above
it; every other ``bash`` or ``python`` block runs here, in order, in a fresh
folder laid out like a checkout (``patternsearch/`` and ``examples/`` linked,
the Omniglot archives at ``../shared/data/omniglot``). Sizes are made tiny by
the mapping below, and only by it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest

from patternsearch.search import SELECTION_ATTR

from .conftest import REPO

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"^<!-- not run in CI(?: by tests/test_readme\.py)?: (?P<reason>.{10,}) -->$")

# Tiny sizes: each of these options, where a command has it, takes this value instead ...
SIZES = {"--trials": "4", "--iterations": "2", "--tasks": "12", "--repeats": "1", "--val-tasks": "4",
         "--val-every": "2", "--meta-batch": "2", "--budget": "12s"}
# ... and commands whose defaults are large get these options appended (argparse: the last value wins).
APPENDED = {
    "optimize": ["--tasks", "12", "--latency-tasks", "1", "--repeats", "1"],
    "select": ["--tasks", "12", "--timed-tasks", "1", "--timed-rounds", "2"],
    "evaluate": ["--tasks", "12", "--repeats", "1"],
    "bench": ["--tasks", "2", "--repeats", "1", "--warmup", "0"],
    "train": ["--iterations", "2", "--meta-batch", "2", "--val-tasks", "4"],
    "specialize": ["--iterations", "2", "--meta-batch", "2", "--val-tasks", "4"],
    "tune": ["--tasks", "12", "--val-tasks", "4", "--budget", "12s", "--candidates", "1"],  # the least that works
    "export": ["--kind", "program"],  # an AOTInductor build takes tens of seconds; tests/test_export.py builds one
}
# The Python blocks' long calls, made tiny the same way.
PYTHON = {
    "ps.optimize(200, spec)": "ps.optimize(4, spec, tasks=12, latency_tasks=1, repeats=1, progress=False)",
    "ps.select(0.01, ": "ps.select(0.01, test_tasks=12, timed_tasks=1, timed_rounds=2, ",
}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    language: str
    code: str
    not_run: str | None  # the reason, when marked


def code_blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    blocks, index = [], 0
    while index < len(lines):
        fence = re.match(r"^```(\w*)$", lines[index])
        if not fence:
            index += 1
            continue
        end = lines.index("```", index + 1)
        above = lines[index - 1] if index else ""
        marked = NOT_RUN.match(above)
        blocks.append(Block(path, index + 1, fence.group(1), "\n".join(lines[index + 1:end]),
                            marked.group("reason") if marked else None))
        index = end + 1
    return blocks


def tiny(args: list[str]) -> list[str]:
    args = [SIZES.get(args[i - 1], arg) if i and args[i - 1] in SIZES else arg for i, arg in enumerate(args)]
    return args + APPENDED.get(args[1] if len(args) > 1 else "", [])


@dataclass
class Workspace:
    root: Path
    env: dict[str, str]
    outputs: list[tuple[str, str]]  # (command or code, stdout) of everything run

    def run_block(self, block: Block) -> None:
        where = f"{block.path.name}:{block.line}"
        if block.language == "python":
            code = block.code
            for long, short in PYTHON.items():
                code = code.replace(long, short)
            self._run([sys.executable, "-c", code], where)
            return
        assert block.language == "bash", f"{where}: a {block.language or 'plain'} block must be marked as not run"
        for line in block.code.replace("\\\n", " ").splitlines():
            args = shlex.split(line, comments=True)
            if not args:
                continue
            if args[0] == "patternsearch":
                self._run([sys.executable, "-m", *tiny(args)], where)
            elif args[0] == "python":
                self._run([sys.executable, *args[1:]], where)
            else:
                pytest.fail(f"{where}: cannot run {args[0]!r}; mark the block as not run, with the reason")

    def _run(self, command: list[str], where: str) -> None:
        result = subprocess.run(command, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=600)
        shown = " ".join(command[1:])
        assert result.returncode == 0, f"{where}: {shown} failed:\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr and "Warning:" not in result.stderr, f"{where}: {result.stderr}"
        self.outputs.append((shown, result.stdout))

    def output(self, start: str) -> str:
        return next(out for shown, out in self.outputs if shown.startswith(start))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, omniglot_root: Path) -> Workspace:
    """A folder laid out like a checkout, where the README's blocks have run in order."""
    top = tmp_path_factory.mktemp("checkout")
    root = top / "main"
    root.mkdir()
    for name in ("patternsearch", "examples"):
        (root / name).symlink_to(REPO / name)
    (top / "shared" / "data").mkdir(parents=True)
    (top / "shared" / "data" / "omniglot").symlink_to(omniglot_root)
    env = {k: v for k, v in os.environ.items() if k != "PATTERNSEARCH_DATA"}
    env.update(PATTERNSEARCH_HOME=str(top / "home"), PATTERNSEARCH_OMNIGLOT_URL="http://127.0.0.1:9/omniglot")
    space = Workspace(root, env, [])
    for block in code_blocks(REPO / "README.md"):
        if block.not_run is None:
            space.run_block(block)
    return space


def test_readme_quick_start_runs_as_written_and_prints_what_it_promises(workspace: Workspace) -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    optimized = workspace.output("-m patternsearch optimize")
    assert "Pareto front" in optimized
    selected = workspace.output("-m patternsearch select")
    study = optuna.load_study(study_name="omniglot-small-conv4-5w1s",
                              storage=f"sqlite:///{workspace.root}/studies/patternsearch.db")
    selection = study.user_attrs[SELECTION_ATTR]
    assert selection["pattern"] in selected and "speedup" in selected
    # The report's headline is select's answer.
    report = json.loads((workspace.root / "report" / "report.json").read_text())
    assert report["headline"]["source"] == "select" and report["headline"]["pattern"] == selection["pattern"]
    assert all((workspace.root / "report" / name).is_file() for name in ("report.html", "pareto.png"))
    assert "5 layer groups" in workspace.output("-m patternsearch groups --model conv4")
    assert "adapt + predict" in workspace.output("-m patternsearch evaluate")
    exported = workspace.output("-m patternsearch export adapter.pt2")  # tune's answer, else select's
    assert exported.startswith("wrote adapter.pt2: ") and "the answer of 'patternsearch tune' on study" in exported
    assert "query accuracy:" in workspace.output("-c import patternsearch as ps\n\nexperiment")


@pytest.mark.parametrize("document", [path.name for path in DOCUMENTS if path.parent.name == "docs"])
def test_every_docs_block_runs_or_says_why_not(document: str, workspace: Workspace) -> None:
    for block in code_blocks(REPO / "docs" / document):
        if block.not_run is None:
            workspace.run_block(block)


def test_every_marked_block_gives_its_reason_and_the_readme_runs_its_commands() -> None:
    for path in DOCUMENTS:
        for line in path.read_text().splitlines():
            if line.startswith("<!-- not run"):
                assert NOT_RUN.match(line), f"{path.name}: {line} (say why it does not run)"
    readme = code_blocks(REPO / "README.md")
    assert sum(block.not_run is None for block in readme) >= len(readme) - 1  # only the install step is not run
