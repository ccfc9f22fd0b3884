"""What the README tells a newcomer is what CI runs, and what it states of the code is so."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import typer

from dytok_cli import cli
from dytok_cli.config import preset_names

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def test_ci_runs_the_readmes_test_command_in_a_new_virtual_environment():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    command = ci[-1]
    assert "python -m venv .venv" in command and "python -m pytest" in command
    assert "rm -rf .venv" in ci  # a new environment every run, as on a newcomer's machine
    readme_lines = README.read_text().splitlines()
    assert command in readme_lines


def test_the_canary_upgrades_every_dependency_capped_at_what_the_suite_passes_on():
    """A release past a cap is tried by CI's newest-releases job before users get it, for every capped one."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    dependencies = re.search(r"^dependencies = \[\n(.*?)^\]", pyproject, re.MULTILINE | re.DOTALL).group(1)
    capped = set(re.findall(r'^\s*"([A-Za-z0-9_.-]+)[^"]*<[^"]*",', dependencies, re.MULTILINE))
    assert {"transformers", "torch", "decord2", "av", "opencv-python-headless", "scenedetect-headless"} <= capped
    workflow = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    canary = workflow[workflow.index("  newest-releases:"):]
    upgraded = re.search(r"pip install --upgrade ([^\n]+)", canary).group(1).split()
    assert capped <= set(upgraded), sorted(capped - set(upgraded))


# --- facts the README states that a test can check ----------------------------------------------


def code_blocks(text: str) -> list[str]:
    """The fenced code blocks of a Markdown text, in order."""
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def dytok_invocations(text: str) -> list[list[str]]:
    """Every `dytok ...` command in a Markdown text's code blocks and inline code, as argument lists
    (what a shell would pass, up to a pipe, `&&`, `;` or a redirection)."""
    lines = []
    for block in code_blocks(text):
        lines += block.replace("\\\n", " ").splitlines()
    lines += re.findall(r"`(dytok [^`]+)`", text)
    invocations = []
    for line in lines:
        lexer = shlex.shlex(line.strip().removeprefix("$ "), posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        try:
            tokens = list(lexer)
        except ValueError:  # an unbalanced quote in prose: not a command line
            continue
        words: list[str] = []
        for token in [*tokens, ";"]:
            if set(token) <= set("|&;<>()"):
                if words[:1] == ["dytok"]:
                    invocations.append(words)
                words = [] if token in ("|", "||", "&&", ";", "(", ")") else ["<redirected>"]
            elif words != ["<redirected>"]:
                words.append(token)
    return invocations


def unknown_flags(argv: list[str]) -> list[str]:
    """The flags of `dytok ARGV` that its command does not take, or the command itself if unknown."""
    group = typer.main.get_command(cli.app)
    if argv[1] in ("--help", "-h", "--version"):
        return []
    command = group.commands.get(argv[1])
    if command is None:
        return [argv[1]]
    known = {flag for param in command.params for flag in (*param.opts, *param.secondary_opts)} | {"-h", "--help"}
    return [word.split("=")[0] for word in argv[2:]
            if word.startswith("-") and word != "-" and not NUMBER.fullmatch(word) and word.split("=")[0] not in known]


NUMBER = re.compile(r"-\d+(\.\d+)?")


def test_every_dytok_command_line_in_the_readme_names_a_command_and_its_flags():
    assert unknown_flags(["dytok", "ask", "x.mp4", "--ratio", "-1", "--no-such-flag=2"]) == ["--no-such-flag"]
    assert unknown_flags(["dytok", "summon"]) == ["summon"]
    invocations = dytok_invocations(README.read_text())
    assert len(invocations) > 20  # the scan finds them: code blocks, continued lines, inline code
    assert {argv[1] for argv in invocations} >= {"ask", "chat", "serve", "summarize", "inspect", "bench", "make-clip"}
    wrong = {" ".join(argv): flags for argv in invocations if (flags := unknown_flags(argv))}
    assert wrong == {}


def test_the_readme_lists_the_presets_shipped():
    sentence = README.read_text().split("shipped shape preset:")[1].split("(")[0]
    assert re.findall(r"`([^`]+)`", sentence) == preset_names()


def test_quick_start_opens_with_commands_that_run_offline_as_pasted():
    """No placeholder, no download: the clip is made by the first command, the models have random weights."""
    section = README.read_text().split("## Quick start")[1].split("\n## ")[0]
    first = dytok_invocations("```\n" + code_blocks(section)[0] + "```\n")
    assert first[0][:2] == ["dytok", "make-clip"]
    made = first[0][2]
    for argv in first[1:]:
        assert argv[2] == made and "--random-weights" in argv, argv
        model = argv[argv.index("--model") + 1]
        assert model in preset_names()
