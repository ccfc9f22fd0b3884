"""The docs as a reader meets them: every `dytok ...` command line quoted in README.md and docs/*.md parses
as the command would take it (a known command, only its options, values it accepts), every relative link
between the pages resolves (its file, and its #anchor among the target's headings), the docs' tables fit
100 columns, and the Python examples compile and import only what the package has.

Command lines are read from ```bash/```console/```sh blocks (a console block's `$ ` lines) and from inline
code, split like a shell does (pipes, `;`, `&&`, redirections, comments), and parsed by the Typer app
in-process: no subprocess, no model. Missing arguments are allowed (prose quotes `dytok ask --engine ray`);
unknown options, bad values, extra arguments and unknown subcommands are not.
"""

from __future__ import annotations

import ast
import re
import shlex
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

from dytok_cli import cli

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "dytok_cli"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Fewer checked lines than this means the extraction broke, not that the docs are right.
AT_LEAST_CHECKED = 40
TABLE_WIDTH = 100

SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```", re.S | re.M)  # indented in a list item too
INLINE = re.compile(r"`((?:[^`\n]|\n(?!\n))+)`")  # a code span may go on over a line break, not a paragraph
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)|^\[[^\]]+\]:\s*(\S+)", re.M)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
# What may stand before the command in a segment of a shell line: `do dytok ...`, `NO_COLOR=1 dytok ...`.
PREFIX_WORDS = {"do", "then", "else", "time", "exec", "nohup", "env"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# `dytok ...`, `dytok ARGS`: the program with arguments left unsaid, not a command line to check.
PLACEHOLDER = re.compile(r"^(\.\.\.|[A-Z][A-Z_]*)$")
FD_REDIRECTION = re.compile(r"(?<!\S)\d+(?=[<>])")
NAMED = re.compile(r"(?:^|[\s;|&(])dytok(?:\s|$)")  # `dytok` as a word: inline code worth splitting


@dataclass(frozen=True)
class Quoted:
    page: str  # path relative to the repository
    line: int  # where the command starts
    text: str  # the command line as quoted, `dytok` first
    in_block: bool  # in a shell block, rather than inline code in the prose

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def prose(text: str) -> str:
    """`text` with its fenced blocks blanked (line numbers kept)."""
    return FENCE.sub(lambda block: "\n" * block.group(0).count("\n"), text)


def shell_lines(block: str, console: bool) -> list[tuple[int, str]]:
    """(line offset, logical line) of a shell block: backslash continuations joined; in a console
    block only the `$ ` lines, which are what was typed."""
    lines: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for offset, raw in enumerate(textwrap.dedent(block).splitlines()):
        if pending is None:
            if console:
                if not raw.startswith("$ "):
                    continue
                raw = raw[2:]
            pending = (offset, "")
        text = pending[1] + raw
        if text.endswith("\\"):
            pending = (pending[0], text[:-1] + " ")
            continue
        lines.append((pending[0], text))
        pending = None
    return lines


def commands_in(line: str) -> list[str]:
    """Each `dytok ...` command in a shell line, as the text of its words; a line the shell could not
    split (an open quote) as it is, which the test then reports."""
    line = FD_REDIRECTION.sub("", line)  # `2>/dev/null`: the 2 names a file descriptor, not an argument
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:
        return [line] if NAMED.search(line) else []
    found: list[list[str]] = []
    segment: list[str] = []
    for token in [*tokens, ";"]:
        if set(token) <= set("();<>|&"):
            words = segment
            while words and (words[0] in PREFIX_WORDS or ASSIGNMENT.match(words[0])):
                words = words[1:]
            if words and words[0] == "dytok" and len(words) > 1 and not PLACEHOLDER.match(words[1]):
                found.append(words)
            # A redirection's target is the next word: it starts the next segment, and is no command.
            segment = []
        else:
            segment.append(token)
    return [shlex.join(words) for words in found]


def quoted_commands() -> list[Quoted]:
    quoted: list[Quoted] = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for block in FENCE.finditer(text):
            if block.group(1) not in SHELL_BLOCKS:
                continue
            first = text.count("\n", 0, block.start(2)) + 1
            for offset, line in shell_lines(block.group(2), console=block.group(1) == "console"):
                quoted += [Quoted(relative(page), first + offset, command, True) for command in commands_in(line)]
        blanked = prose(text)
        for span in INLINE.finditer(blanked):
            code = span.group(1).replace("\n", " ")
            if NAMED.search(code):
                line = blanked.count("\n", 0, span.start()) + 1
                quoted += [Quoted(relative(page), line, command, False) for command in commands_in(code)]
    return quoted


QUOTED = quoted_commands()
GROUP = typer.main.get_command(cli.app)
HELP = {"-h", "--help"}


def is_missing_parameter(error: Exception) -> bool:
    # Typer vendors Click and exports only its base exception; the subclass is known by its name.
    return any(kind.__name__ == "MissingParameter" for kind in type(error).__mro__)


@pytest.mark.parametrize("quoted", QUOTED, ids=[quoted.id for quoted in QUOTED])
def test_a_quoted_command_line_parses(quoted: Quoted):
    words = shlex.split(quoted.text)[1:]
    if words[0].startswith("-"):
        allowed = {name for param in GROUP.params for name in (*param.opts, *param.secondary_opts)} | HELP
        unknown = [word for word in words if word.startswith("-") and word not in allowed]
        assert not unknown, f"{quoted.id}: `{quoted.text}`: dytok has no option {unknown[0]}"
        return
    name, arguments = words[0], [word for word in words[1:] if word not in HELP]
    command = GROUP.commands.get(name)
    if command is None:
        pytest.fail(f"{quoted.id}: `{quoted.text}`: dytok has no command {name!r} ({', '.join(GROUP.commands)})")
    try:
        command.make_context(f"dytok {name}", arguments)
    except typer.TyperException as error:
        if not is_missing_parameter(error):
            pytest.fail(f"{quoted.id}: `{quoted.text}`: {error.format_message()}")


def test_the_command_lines_were_found():
    """Guards the test above against passing on nothing: the extraction finds the quoted lines, and every
    command the CLI has is quoted in a shell block somewhere."""
    runnable = [quoted for quoted in QUOTED if shlex.split(quoted.text)[1:2] and shlex.split(quoted.text)[1] in GROUP.commands]
    assert len(runnable) >= AT_LEAST_CHECKED, f"only {len(runnable)} dytok command lines found in {len(PAGES)} pages"
    in_blocks = {shlex.split(quoted.text)[1] for quoted in runnable if quoted.in_block}
    assert set(GROUP.commands) <= in_blocks, f"never quoted: {sorted(set(GROUP.commands) - in_blocks)}"
    # The shell splitting: a pipe, a comment, a continuation and a redirection.
    assert commands_in("find . -name '*.mp4' | dytok ask - \"what?\" -n 8 > a.jsonl 2>/dev/null  # note") == [
        "dytok ask - 'what?' -n 8"
    ]
    assert commands_in("dytok ...") == commands_in("lmms-eval --model dytok --tasks mlvu_test") == []
    assert shell_lines("dytok ask a.mp4 \\\n    --ratio 0.1\necho\n", console=False) == [
        (0, "dytok ask a.mp4      --ratio 0.1"), (2, "echo")
    ]


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.finditer(prose(page.read_text(encoding="utf-8"))):
        base = slug(heading.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links() -> list[tuple[str, str, str]]:
    """(page, line, target) of every link that is not to the web."""
    found = []
    for page in PAGES:
        text = prose(page.read_text(encoding="utf-8"))
        text = INLINE.sub(lambda span: " " * len(span.group(0)), text)
        for match in LINK.finditer(text):
            target = next(group for group in match.groups() if group)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):
                found.append((relative(page), str(text.count("\n", 0, match.start()) + 1), target))
    return found


LINKS = links()


@pytest.mark.parametrize("page, line, target", LINKS, ids=[f"{page}:{line}:{target}" for page, line, target in LINKS])
def test_a_relative_link_resolves(page, line, target):
    path, _, anchor = target.partition("#")
    source = ROOT / page
    destination = (source.parent / path).resolve() if path else source
    assert destination.exists(), f"{page}:{line}: {target}: no such file"
    if anchor and destination.suffix == ".md":
        assert anchor in anchors(destination), f"{page}:{line}: {target}: no heading gives #{anchor}"


def test_the_links_were_found():
    pages = {page for page, _, _ in LINKS}
    assert len(LINKS) >= 20 and "docs/index.md" in pages, f"only {len(LINKS)} links found, in {sorted(pages)}"
    assert slug("`dytok ask VIDEO... [QUESTION]`") == "dytok-ask-video-question"
    assert slug("On a hybrid decoder (Qwen3.5)") == "on-a-hybrid-decoder-qwen35"


@pytest.mark.parametrize("page", [page for page in PAGES if page.parent == ROOT / "docs"], ids=relative)
def test_the_tables_fit_100_columns(page):
    wide = [
        f"{relative(page)}:{number}: {len(line)} columns"
        for number, line in enumerate(prose(page.read_text(encoding="utf-8")).splitlines(), start=1)
        if line.startswith("|") and len(line) > TABLE_WIDTH
    ]
    assert not wide, "tables wider than 100 columns:\n" + "\n".join(wide)


def top_level_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {target.id for target in targets if isinstance(target, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    if path.name == "__init__.py":
        exported = next((node.value for node in tree.body if isinstance(node, ast.Assign)
                         and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)), None)
        if exported is not None:
            names |= set(ast.literal_eval(exported))
    return names


def module_file(module: str) -> Path | None:
    parts = module.split(".")[1:]
    for candidate in (PACKAGE.joinpath(*parts, "__init__.py"), PACKAGE.joinpath(*parts).with_suffix(".py")):
        if parts and candidate.exists() or not parts and candidate.name == "__init__.py":
            return candidate
    return None


PYTHON = [
    (relative(page), page.read_text(encoding="utf-8").count("\n", 0, block.start(2)) + 1, block.group(2))
    for page in PAGES for block in FENCE.finditer(page.read_text(encoding="utf-8")) if block.group(1) == "python"
]


@pytest.mark.parametrize("page, line, code", PYTHON, ids=[f"{page}:{line}" for page, line, _ in PYTHON])
def test_a_python_example_compiles_and_imports_what_exists(page, line, code):
    """Without running it (that needs a model): it compiles, and each `from dytok_cli... import name`
    names a module of the package and something defined there or a module in it (torch-free: read from
    the source)."""
    tree = ast.parse(compile(code, f"{page}:{line}", "exec", ast.PyCF_ONLY_AST))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "dytok_cli":
            path = module_file(node.module)
            assert path is not None, f"{page}:{line}: no module {node.module}"
            # A name is defined in the module, or is a module of the package (`from dytok_cli.media import subtitles`).
            missing = {alias.name for alias in node.names
                       if alias.name not in top_level_names(path) and module_file(f"{node.module}.{alias.name}") is None}
            assert not missing, f"{page}:{line}: {node.module} has no {sorted(missing)}"
