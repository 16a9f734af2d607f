"""What the docs name exists: flags, chart values, make targets, environment variables, files.

README.md, docs/*.md and charts/*/README.md are read; names are taken from inline code
(`...`) and fenced code blocks, where they are meant literally (file paths, which cannot be
mistaken for prose, from the prose as well):

- command lines (`heketi-csi <command> ...`, `python -m <our module> ...`, `make ...`): each
  flag must be one that command's `--help` lists, each make target a Makefile target, each
  `VAR=value` in front of a command a variable our files read; `python -m X` must be one of
  our modules;
- a bare `--flag` must be a flag of one of our commands (or an allowed flag of another tool);
- a bare `SOME_VARIABLE` (or `SOME_VARIABLE=...`) must occur in our files outside the docs;
- paths under services/, tests/, devtools/, k8s/, docs/, bench/, charts/, tools/ must exist
  (`<placeholder>` and `*` match anything);
- chart values: the first column of docs/helm.md's values table, dotted values in its last
  column, and `--set a.b=...` anywhere must be values of charts/heketi-csi/values.yaml,
  and every value of values.yaml must be in that table.

The checker takes the repository root, so the negative tests run it on a temporary copy with
one thing renamed and see that rename reported.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PATH_ROOTS = ("services", "tests", "devtools", "k8s", "docs", "bench", "charts", "tools")
OUR_MODULES = ("services", "devtools", "tools", "bench", "tests")

# Flags of other programs the docs mention on their own (never ours); each with its owner.
OTHER_FLAGS = {
    "--extra-create-metadata": "csi-provisioner (k8s/base sets it)",
    "--feature-gates": "csi-snapshotter",
    "--v": "the sidecars' log level",
    "--system-reserved": "kubelet",
    "--iptables": "dockerd (docs/compose.md: how the private dockerd runs)",
    "--disable-auth": "Heketi's own server (docs/simulator.md: how the real one runs here)",
}
# Upper-case words in code that are not environment variables of ours.
OTHER_NAMES = {
    "COMPOSE_DOCKER_CLI_BUILD": "docker-compose's (docs/compose.md: what works with it)",
    "CONFIG_QFMT_V2": "a kernel configuration option",
    "HEKETI_DISABLE_BACKGROUND_CLEANER": "Heketi's own server (docs/simulator.md: what a "
                                         "real Heketi does after a crash)",
}

TOKEN = re.compile(r"`([^`]+)`")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
PATH = re.compile(r"(?<![\w./$~-])((?:" + "|".join(PATH_ROOTS) + r")/[\w./<>*{}\-]*)")
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")
ASSIGNMENT = re.compile(r"^([A-Z][A-Z0-9_]*)=")
PYTHON = re.compile(r"^(?:python3?|\S*/python3?|\$\(PY\))$")
VALUE_PATH = re.compile(r"^[a-zA-Z][\w]*(?:\.[a-zA-Z<][\w<>|\\]*|\[\])*$")


@dataclass(frozen=True)
class Ref:
    doc: str
    what: str  # path, flag, make, module, env, value
    name: str
    context: str = ""

    @property
    def key(self) -> str:
        return f"{self.doc}: {self.what} {self.name}"

    def __str__(self) -> str:
        if self.what == "path" or not self.context:
            return self.key
        where = f" in `{self.context}`" if self.context and self.context != self.name else ""
        return f"{self.doc}: {self.what} {self.name}{where}"


def doc_files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md")),
            *sorted(root.glob("charts/*/README.md"))]


def snippets(text: str) -> Iterator[str]:
    """Inline code spans and the logical lines of fenced code blocks."""
    blocks = FENCE.findall(text)
    for block in blocks:
        yield from block.replace("\\\n", " ").splitlines()
    prose = FENCE.sub("", text)
    for span in TOKEN.findall(prose):
        yield " ".join(span.split())


def segments(line: str) -> Iterator[list[str]]:
    """The simple commands of a shell line, as tokens; `$(...)` counts as a command too."""
    line = re.sub(r"(^|\s)#.*$", "", line)
    inner = re.findall(r"\$\(([^()]*)\)", line)
    line = re.sub(r"\$\([^()]*\)", " ", line)
    for part in [*re.split(r"&&|\|\||;|\|(?![^<]*>)", line), *inner]:
        try:
            tokens = shlex.split(part)
        except ValueError:
            tokens = part.split()
        while tokens and tokens[0] in ("sudo", "eval", "exec", "time"):
            tokens = tokens[1:]
        if tokens:
            yield tokens


# --------------------------------------------------------------------------- what is ours


# Run in one child interpreter (imports shared, ~1 s in all): for each command, the flags of
# its deepest `--help`. The words after the module are followed only while the previous
# help lists them as subcommands (later words may be arguments), and only modules that use
# argparse are asked, so `--help` never reaches a command that would run instead.
_HELP_SCRIPT = r"""
import contextlib, io, json, re, runpy, sys

def usage(argv):
    out = io.StringIO()
    sys.argv = [argv[0], *argv[1:], "--help"]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code not in (0, None):
            return None
    except Exception:
        return None
    text = out.getvalue()
    if not text.startswith("usage:"):
        return None
    subs = set(re.findall(r"^    ([a-z][\w-]*)(?:\s|$)", text, re.M))
    for choices in re.findall(r"\{([\w,-]+)\}", text):
        subs.update(choices.split(","))
    return sorted(set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", text))), subs

found = {}
for command in json.loads(sys.argv[1]):
    argv = command.split()
    best = usage(argv[:1])
    end = 1
    while best is not None and end < len(argv) and argv[end] in best[1]:
        deeper = usage(argv[:end + 1])
        if deeper is None:
            break
        best, end = deeper, end + 1
    found[command] = None if best is None else best[0]
print(json.dumps(found))
"""


def command_flags(root: Path, commands: Iterable[str]) -> dict[str, frozenset[str] | None]:
    """Flags of each `python -m <command>` (module and words), None where there is no help."""
    asked = sorted(c for c in set(commands) if _uses_argparse(root, c.split()[0]))
    done = subprocess.run([sys.executable, "-c", _HELP_SCRIPT, json.dumps(asked)], cwd=root,
                          capture_output=True, text=True, timeout=300, check=True)
    answers = json.loads(done.stdout.splitlines()[-1])
    return {c: None if answers.get(c) is None else frozenset(answers[c]) for c in commands}


def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__main__.py"):
        if path.is_file():
            return path
    return None


def _uses_argparse(root: Path, module: str) -> bool:
    path = _module_file(root, module)
    return path is not None and "argparse" in path.read_text()


def module_exists(root: Path, module: str) -> bool:
    return _module_file(root, module) is not None


@functools.cache
def make_targets(root: Path) -> frozenset[str]:
    return frozenset(re.findall(r"^([\w.-]+):(?!=)", (root / "Makefile").read_text(), re.M))


@functools.cache
def source_text(root: Path) -> str:
    """Every file of ours but the docs: where an environment variable must be read."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                            text=True, check=False)
    if listed.returncode == 0:
        files = [root / name for name in listed.stdout.split("\0") if name]
    else:  # not a git checkout: every file but the virtualenv's and caches
        files = [p for p in root.rglob("*") if not {".venv", ".git", "__pycache__"} & set(
            p.relative_to(root).parts)]
    this = root / Path(__file__).resolve().relative_to(REPO)  # names them only to test
    chunks = []
    for path in files:
        if path == this:
            continue
        if path.suffix == ".md" or not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        chunks.append(path.read_text(errors="replace"))
    return "\n".join(chunks)


def chart_values(root: Path) -> Any:
    return yaml.safe_load((root / "charts/heketi-csi/values.yaml").read_text())


def value_exists(values: Any, dotted: str) -> bool:
    """`a.b.c` names a value of values.yaml; `list[0].field` an item of a list value, whose
    items the user writes (only the list itself must be a value)."""
    node = values
    for part in dotted.removesuffix("[]").split("."):
        key, indexed, _ = part.partition("[")
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
        if indexed:
            return isinstance(node, list)
    return True


def value_leaves(tree: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from value_leaves(value, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix


# ------------------------------------------------------------------------------ extraction


def references(root: Path) -> Iterator[Ref]:
    for doc in doc_files(root):
        if not doc.is_file():
            continue
        name = str(doc.relative_to(root))
        text = doc.read_text()
        for line in text.splitlines():  # paths: in prose too (they are unambiguous)
            for match in PATH.finditer(line):
                yield Ref(name, "path", match.group(1), line.strip()[:100])
        for snippet in snippets(text):
            yield from _snippet_refs(name, snippet)
        if name == "docs/helm.md":
            yield from helm_table_values(name, text, chart_values(root))
        for match in re.finditer(r"--set(?:-string)?[ =]([\w.\[\]]+)=", text):
            yield Ref(name, "value", match.group(1))


def _snippet_refs(doc: str, snippet: str) -> Iterator[Ref]:
    bare = snippet.strip()
    if re.fullmatch(r"--[a-z0-9][a-z0-9-]*(=\S*)?", bare):
        yield Ref(doc, "flag", bare.split("=", 1)[0])
        return
    env = bare.split("=", 1)[0]
    if ENV_NAME.match(env) and (env == bare or "=" in bare):
        yield Ref(doc, "env", env)
        return
    for tokens in segments(snippet):
        yield from _command_refs(doc, tokens, snippet.strip())


def _command_refs(doc: str, tokens: list[str], context: str) -> Iterator[Ref]:
    while tokens and ASSIGNMENT.match(tokens[0]):
        yield Ref(doc, "env", tokens[0].split("=", 1)[0], context)
        tokens = tokens[1:]
    if not tokens:
        return
    program, rest = tokens[0], tokens[1:]
    if program == "make":
        for token in rest:
            if ASSIGNMENT.match(token):
                yield Ref(doc, "env", token.split("=", 1)[0], context)
            elif not token.startswith("-") and re.fullmatch(r"[\w.-]+", token):
                yield Ref(doc, "make", token, context)
        return
    if program == "heketi-csi":
        argv: list[str] = ["services.cli"]
    elif PYTHON.match(program) and rest[:1] == ["-m"] and len(rest) > 1:
        module, rest = rest[1], rest[2:]
        if module.split(".")[0] not in OUR_MODULES:
            return
        argv = [module]
    else:
        return
    words = []
    for token in rest:
        if not re.fullmatch(r"[a-z][\w-]*", token):
            break
        words.append(token)
    command = " ".join([*argv, *words])
    if argv[0] != "services.cli":
        yield Ref(doc, "module", argv[0], f"{command}\0{context}")
    for token in rest:
        if token.startswith("--"):
            yield Ref(doc, "flag", token.split("=", 1)[0], f"{command}\0{context}")


def helm_table_values(doc: str, text: str, tops: Iterable[str]) -> Iterator[Ref]:
    """Values in docs/helm.md's table: every span of the first column (`.x` is relative to
    the previous value's parent; `<a\\|b>` are alternatives), and in the last column the
    dotted spans that start with a top-level value (`tops`)."""
    top_level = set(tops)
    top = None
    for line in text.splitlines():
        if not line.startswith("|"):
            top = None
            continue
        cells = re.split(r"(?<!\\)\|", line)[1:-1]
        if cells and cells[0].strip() == "value":
            top = True
            continue
        if top is None or set(cells[0].strip()) <= {"-", ":"}:
            continue
        previous: list[str] = []
        for span in TOKEN.findall(cells[0]):
            names = _alternatives(span.replace("\\|", "|"))
            if span.startswith("."):
                names = [p.rsplit(".", 1)[0] + span for p in previous]
            else:
                previous = names
            for name in names:
                yield Ref(doc, "value", name, "values table")
        for cell in cells[2:]:  # cells[1]: the defaults
            for span in TOKEN.findall(cell):
                if "." in span and VALUE_PATH.match(span) and span.split(".")[0] in top_level:
                    yield Ref(doc, "value", span, "values table")


def _alternatives(span: str) -> list[str]:
    match = re.search(r"<([^>]*\|[^>]*)>", span)
    if match is None:
        return [span]
    return [n for alt in match.group(1).split("|")
            for n in _alternatives(span[:match.start()] + alt + span[match.end():])]


# -------------------------------------------------------------------------------- checking


def _path_exists(root: Path, path: str) -> bool:
    path = path.split("::", 1)[0].rstrip(".,:;)")
    pattern = re.sub(r"<[^>]*>", "*", path)
    pattern = re.sub(r"\{[^}]*\}", "*", pattern)
    if "*" in pattern:
        return any(root.glob(pattern.rstrip("/")))
    return (root / pattern).exists()


def stale(root: Path, refs: Iterable[Ref]) -> list[Ref]:
    refs = sorted(set(refs), key=str)
    commands = {r.context.split("\0", 1)[0] for r in refs
                if r.what in ("flag", "module") and "\0" in r.context}
    commands |= {"services.cli controller", "services.cli node", "services.cli registrar",
                 "services.cli migrate"}
    helps = command_flags(root, commands)
    ours = frozenset().union(*(h for h in helps.values() if h))
    values = chart_values(root)
    source = source_text(root)
    targets = make_targets(root)
    found = []
    for ref in refs:
        if ref.what == "path":
            bad = not _path_exists(root, ref.name)
        elif ref.what == "module":
            bad = not module_exists(root, ref.name)
        elif ref.what == "make":
            bad = ref.name not in targets
        elif ref.what == "env":
            bad = ref.name not in OTHER_NAMES and \
                re.search(rf"(?<![A-Z0-9_]){ref.name}(?![A-Z0-9_])", source) is None
        elif ref.what == "value":
            bad = not value_exists(values, ref.name)
        elif "\0" in ref.context:
            flags = helps[ref.context.split("\0", 1)[0]]
            bad = flags is None or (ref.name not in flags and ref.name not in OTHER_FLAGS)
        else:
            bad = ref.name not in ours and ref.name not in OTHER_FLAGS
        if bad:
            found.append(Ref(ref.doc, ref.what, ref.name, ref.context.split("\0")[-1]))
    return found


def undocumented_values(root: Path) -> list[str]:
    text = (root / "docs/helm.md").read_text()
    values = chart_values(root)
    documented = {r.name.removesuffix("[]")
                  for r in helm_table_values("docs/helm.md", text, values)}
    return [leaf for leaf in value_leaves(values)
            if not any(leaf == d or leaf.startswith(d + ".") for d in documented)]


# README.md is the lead's to edit: the stale references it still has (reported for the lead
# to fix). The test fails when this list is not exactly what the check finds, so an entry
# must go as soon as README.md is fixed, and nothing new can hide here.
README_PENDING: set[str] = set()


# ----------------------------------------------------------------------------------- tests


@functools.cache
def _repo_refs() -> tuple[Ref, ...]:
    return tuple(references(REPO))


def test_the_checker_finds_each_kind_of_reference() -> None:
    kinds = {r.what for r in _repo_refs()}
    assert kinds == {"path", "flag", "make", "module", "env", "value"}
    assert Ref("docs/helm.md", "value", "node.mountTimeout", "values table") in _repo_refs()


def test_every_reference_of_the_docs_exists() -> None:
    found = stale(REPO, _repo_refs())
    readme = {f.key for f in found if f.doc == "README.md"}
    others = [str(f) for f in found if f.doc != "README.md"]
    assert not others, "the docs name what does not exist:\n" + "\n".join(others)
    assert readme == README_PENDING, (
        "README.md's stale references changed; update README_PENDING:\n"
        + "\n".join(sorted(readme ^ README_PENDING)))


def test_every_chart_value_is_documented() -> None:
    assert undocumented_values(REPO) == []


def test_the_allow_lists_are_needed_and_not_ours() -> None:
    """Each allowed name is named by the docs and is not one of ours (a rename of ours must
    not hide behind an allowance)."""
    named = {r.name for r in _repo_refs()}
    assert set(OTHER_FLAGS) | set(OTHER_NAMES) <= named, "allowances the docs no longer need"
    commands = [f"services.cli {c}" for c in ("controller", "node", "registrar", "migrate")]
    ours = frozenset().union(*(f or () for f in command_flags(REPO, commands).values()))
    assert not set(OTHER_FLAGS) & ours
    assert not [n for n in OTHER_NAMES if n in source_text(REPO)]


@pytest.fixture(scope="module")
def copy_of_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("docs-refs") / "repo"
    shutil.copytree(REPO, root, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"))
    return root


def _rename(root: Path, file: str, old: str, new: str) -> None:
    path = root / file
    text = path.read_text()
    assert old in text, f"{file} has no {old!r}"
    path.write_text(text.replace(old, new))


def test_renames_are_caught(copy_of_repo: Path) -> None:
    """On a temporary copy: a flag, a file, a make target, an environment variable and a chart
    value renamed in the code (not in the docs) are each reported."""
    root = copy_of_repo
    _rename(root, "services/controller/main.py", '"--adhoc-heketi-urls"', '"--extra-heketi-urls"')
    (root / "docs/node-recovery.md").rename(root / "docs/recovery.md")
    _rename(root, "Makefile", "\nversions:", "\nsync-versions:")
    renamed = [p for p in root.rglob("*") if p.is_file() and p.suffix != ".md"
               and b"DELETE_STALE_PODS" in p.read_bytes()]
    assert len(renamed) > 2
    for path in renamed:
        _rename(root, str(path.relative_to(root)), "DELETE_STALE_PODS", "EVICT_STALE_PODS")
    _rename(root, "charts/heketi-csi/values.yaml", "  mountTimeout:", "  mountTimeoutSeconds:")
    found = "\n".join(f.key for f in stale(root, references(root)))
    assert "flag --adhoc-heketi-urls" in found
    assert "path docs/node-recovery.md" in found
    assert "make versions" in found
    assert "env DELETE_STALE_PODS" in found
    assert "value node.mountTimeout" in found
    assert "node.mountTimeoutSeconds" in undocumented_values(root)
