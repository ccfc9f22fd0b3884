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


# --- measured figures ---------------------------------------------------------------------------------------

# Words from inside the project's own work, which mean nothing to a reader ("no session so far had one"), and
# "this CPU", which a reader takes for their own: a figure names the CPU it was measured on instead.
INSIDE_WORDS = re.compile(r"\bsessions?\b|\bso far had\b|\blast time\b|\bthis CPU\b", re.I)


@pytest.mark.parametrize("page", PAGES, ids=relative)
def test_a_page_says_nothing_from_inside_the_project(page):
    text = INLINE.sub("", prose(page.read_text(encoding="utf-8")))
    found = [f"{relative(page)}:{text.count(chr(10), 0, match.start()) + 1}: {match.group(0)!r}"
             for match in INSIDE_WORDS.finditer(text)]
    assert not found, "\n".join(found)


def docs_figures():
    """benchmarks/docs_figures.py as a module (it imports only the standard library until it measures)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "benchmarks" / "docs_figures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


FIGURES = docs_figures()
MACHINE = FIGURES.Machine(date="2026-12-07", cpu="AMD EPYC", cores=2, avx512_bf16=True, torch="2.14.1",
                          transformers="5.25.0")


def test_each_regenerated_region_is_marked_once_in_its_page():
    """What `docs_figures.py --write` replaces is there, once, and only the parts it writes are marked."""
    for part, page in FIGURES.PAGES.items():
        text = page.read_text(encoding="utf-8")
        replaced = FIGURES.replace_region(text, part, "NEW")
        start, end = f"<!-- docs_figures {part} -->\n", f"\n<!-- /docs_figures {part} -->"
        assert start + "NEW" + end in replaced
        assert replaced.split(start)[0] == text.split(start)[0] and replaced.split(end)[1] == text.split(end)[1]
        # What stands there now is figures with their conditions: a date and whether the CPU had AVX512-BF16.
        region = text.split(start)[1].split(end)[0]
        assert re.search(r"\b20\d\d-\d\d-\d\d\b", region) and "AVX512-BF16" in region, f"{part}: {region[:80]!r}"
    marked = {(relative(page), part) for page in PAGES for part in
              re.findall(r"<!-- docs_figures (\S+) -->", INLINE.sub("", prose(page.read_text(encoding="utf-8"))))}
    assert marked == {(relative(page), part) for part, page in FIGURES.PAGES.items()}
    with pytest.raises(ValueError):
        FIGURES.replace_region("no markers", "summarize", "NEW")


def test_the_quick_start_lines_timed_are_the_readmes():
    lines = FIGURES.quick_start_lines((ROOT / "README.md").read_text(encoding="utf-8"))
    assert lines[0].startswith("dytok make-clip ") and len(lines) >= 4
    assert all(line.startswith("dytok ") for line in lines)
    block = " ".join(FIGURES.quick_start_block(MACHINE, "bfloat16", (2.0, 2.4), [(line, 12.0) for line in lines]).split())
    assert "`make-clip` 12 s" in block and "`bench` 12 s" in block
    assert "Measured 2026-12-07 on an AMD EPYC (2 cores, with AVX512-BF16), bfloat16" in block
    assert "a load average of 2.0 to 2.4 while it ran" in block


def test_a_regenerated_block_names_its_conditions_and_fits_the_checks():
    """The blocks `docs_figures.py` writes: conditions first, prose and tables within 100 columns, and
    command lines that the CLI parses (a renamed flag breaks this test, not the next regeneration)."""
    result = {"visual_tokens": 3520, "total_s": 61.2, "prefill_s": 20.04, "next_question_s": 3.1}
    compressed = {**result, "visual_tokens": 880, "total_s": 45.9, "prefill_s": 8.0, "next_question_s": 4.2,
                  "speedup_total": 1.33, "speedup_prefill": 2.5, "speedup_next_question": 0.74}
    report = {"dtype": "bfloat16", "results": [{**result, "ratio": 1.0, "method": "none"},
                                               {**compressed, "ratio": 0.25, "method": "dytok-fastv"}]}
    reports = {model: report for model in FIGURES.FIRST_ANSWER_MODELS}
    timings = {"vision_s": 50.0, "prefill_s": 144.0, "generate_s": 300.0, "chapters_s": 20.0, "write_up_s": 40.0}
    records = [{"model": model, "method": method, "ratio": 1.0 if method == "none" else 0.25, "dtype": "bfloat16",
                "windows": 2, "frames": 30, "visual_tokens": {"kept": 880},
                "timings": {**timings, "prefill_s": 288.0} if method == "none" else timings,
                "seconds_per_video_minute": 140.0}
               for model in FIGURES.FIRST_ANSWER_MODELS for method in FIGURES.SUMMARIZE_METHODS]
    blocks = [FIGURES.first_answer_block(MACHINE, (2.0, 2.4), reports, 32, 16),
              FIGURES.summarize_block(MACHINE, (2.0, 2.4), records, 2, 32)]
    for block in blocks:
        assert " ".join(block.split()).startswith("Measured 2026-12-07 on an AMD EPYC (2 cores, with AVX512-BF16), bfloat16")
        assert all(len(line) <= TABLE_WIDTH for line in prose(block).splitlines())  # prose and tables
    assert "| `qwen3.5-0.8b` | `dytok-fastv`, 0.25 | 880 | 46 s (1.33x) | 8.0 s (2.50x) | 4.2 s (0.74x) |" in blocks[0]
    assert "| `llava-ov-0.5b` | `dytok-fastv` 0.25 | 880 | 50 | 144.0 (2.0x) | 216 | 140 |" in blocks[1]
    commands = [command for block in blocks for line in block.splitlines() for command in commands_in(line)]
    assert {shlex.split(command)[1] for command in commands} == {"make-clip", "bench"}
    for command in commands:
        words = shlex.split(command)
        GROUP.commands[words[1]].make_context(f"dytok {words[1]}", words[2:])
