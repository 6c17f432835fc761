"""Docs that run: every shell and Python block of the docs, executed as a reader would run them.

What runs
    README.md, then docs/*.md (by name), then sdk/README.md: every fenced block whose language is
    ``sh``, ``bash`` or ``shell`` (run by bash) or ``python``/``py`` (run by the venv's Python in a
    fresh interpreter), in the order of the page. Other fences (``json``, ``text``, none) are
    illustrations and are not run. Whatever sections a page has are run: a new section needs no
    change here.

The server
    One real ``trialbook serve`` (tests/support/live.py LiveServer, ``cli=True``) over the suite's
    database, emptied first: a first start on an empty database, so it prints the first admin key,
    which the blocks get as ``TRIALBOOK_API_KEY`` (what the README tells the reader to export).
    Every page runs against the same server in turn, so walk-throughs that collide (the same
    experiment key twice: a 409) fail here.

The reader's shell
    The blocks of one page share one shell session: variables set in a block (``API=...``,
    ``EDITOR=$(...)``) are there in the next, and exported ones reach the Python blocks'
    environment. Each page starts a new session. Blocks run in a scratch directory that links
    every top-level entry of the checkout (``.venv``, ``sdk``, ``Makefile``...), so a file a block
    writes (``report.html``) lands there. The environment is the test's, without any
    ``TRIALBOOK_*`` variable and without the venv on ``PATH`` (a reader has not activated it), plus
    ``TRIALBOOK_DATABASE_URL`` (the server's database, so ``.venv/bin/trialbook keys create`` works
    as on the server machine), ``TRIALBOOK_API_KEY`` and ``TRIALBOOK_URL``. The docs' address
    ``http://127.0.0.1:8000`` is replaced by the test server's. Shell blocks run with
    ``set -eo pipefail`` and ``curl`` fails on an HTTP error status (``--fail-with-body``): a 4xx
    or 5xx answer fails the block, as a reader would notice it.

A transcript of every block and its output: ``DOCS_RUN_VERBOSE=1 pytest -s tests/docs``.

Markers (an HTML comment on the line right before the opening fence; blank lines between allowed)
    ``<!-- not-run: reason -->``  the block is not run; the reason is required. Keep these rare:
    only for commands that start the server or the suite itself, or install packages.
    ``<!-- expect-error: reason -->``  the block shows a refusal (a 401, a 422): it runs and must
    fail (a curl of it gets an HTTP error status), so the refusal it documents stays true.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.live import REPO, LiveServer

DOCS_URL = "http://127.0.0.1:8000"  # the address the docs use (make run's default)
SHELLS = {"sh", "bash", "shell"}
PYTHONS = {"python", "py"}
# A bound against a hung block, not a speed check: a loaded CI machine (parallel workers) can take
# a minute for three CLI calls.
BLOCK_TIMEOUT_S = 300
MARKER = re.compile(r"^<!--\s*(not-run|expect-error):(.*?)-->\s*$")
FENCE = re.compile(r"^(```+)\s*([\w+-]*)")
KEY_LINE = re.compile(r"^ {4}(tb_[A-Za-z0-9_-]{40,})$", re.MULTILINE)


def documents() -> list[Path]:
    """The pages a reader follows, in reading order."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "sdk" / "README.md"]


@dataclass(frozen=True)
class Block:
    """One fenced block of a page."""

    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None  # the reason, when marked not-run
    expect_error: str | None = None  # the reason, when marked expect-error

    @property
    def kind(self) -> str | None:
        if self.lang in SHELLS:
            return "shell"
        if self.lang in PYTHONS:
            return "python"
        return None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def parse_blocks(path: Path, text: str | None = None) -> list[Block]:
    """Every fenced block of a Markdown page, with its language and not-run marker."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        j = i + 1
        while j < len(lines) and not lines[j].startswith(fence):
            j += 1
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker = MARKER.match(lines[k].strip()) if k >= 0 else None
        kind, reason = (marker.group(1), marker.group(2).strip()) if marker else (None, None)
        blocks.append(
            Block(
                path=path,
                line=i + 1,
                lang=lang,
                code="\n".join(lines[i + 1 : j]) + "\n",
                not_run=reason if kind == "not-run" else None,
                expect_error=reason if kind == "expect-error" else None,
            )
        )
        i = j + 1
    return blocks


def reader_environment(database_url: str, api_key: str, url: str) -> dict[str, str]:
    """The test's environment as a reader's terminal: no TRIALBOOK_*, no venv on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALBOOK_")}
    inside = [p for p in env.get("PATH", "").split(os.pathsep) if p]
    env["PATH"] = os.pathsep.join(
        p for p in inside if not Path(p).resolve().is_relative_to(REPO.resolve())
    )
    env.pop("VIRTUAL_ENV", None)
    env.update(TRIALBOOK_DATABASE_URL=database_url, TRIALBOOK_API_KEY=api_key, TRIALBOOK_URL=url)
    return env


def scratch_checkout(where: Path) -> Path:
    """A directory that looks like the checkout (links to its entries) for blocks to write in."""
    where.mkdir(parents=True, exist_ok=True)
    for entry in REPO.iterdir():
        if entry.name.startswith("trialbook.db") or entry.name == ".git":
            continue
        link = where / entry.name
        if not link.exists():
            link.symlink_to(entry)
    return where


SHELL_PRELUDE = """\
set -eo pipefail
__tb_base=" $(compgen -v | tr '\\n' ' ') "
[ -f "$TB_STATE" ] && source "$TB_STATE"
curl() { command curl --fail-with-body --show-error --max-time 60 "$@"; }
__tb_save() {
  local v
  for v in $(compgen -v); do
    case "$__tb_base" in *" $v "*) continue ;; esac
    case "$v" in __tb_*) continue ;; esac
    declare -p "$v"
  done > "$TB_STATE"
  env -0 > "$TB_ENV"
}
"""


class Reader:
    """One page's terminal: a shell session's state carried from block to block."""

    def __init__(self, cwd: Path, env: dict[str, str], server_url: str, state_dir: Path) -> None:
        self.cwd = cwd
        self.base_env = env
        self.server_url = server_url
        self.state = state_dir / "shell.state"
        self.env_file = state_dir / "shell.env"
        state_dir.mkdir(parents=True, exist_ok=True)
        self.state.unlink(missing_ok=True)
        self.env_file.unlink(missing_ok=True)

    def exported(self) -> dict[str, str]:
        """The environment after the last shell block (what a Python block started there sees)."""
        if not self.env_file.exists():
            return dict(self.base_env)
        out: dict[str, str] = {}
        for item in self.env_file.read_bytes().split(b"\0"):
            name, sep, value = item.decode(errors="replace").partition("=")
            if sep and name and not name.startswith("BASH_FUNC_"):
                out[name] = value
        return out

    def run(self, block: Block) -> subprocess.CompletedProcess[str]:
        code = block.code.replace(DOCS_URL, self.server_url)
        if block.kind == "shell":
            script = f"{SHELL_PRELUDE}\n{code}\n__tb_save\n"
            env = {**self.base_env, "TB_STATE": str(self.state), "TB_ENV": str(self.env_file)}
            argv = ["bash", "-c", script]
        else:
            env = self.exported()
            env.pop("TB_STATE", None)
            env.pop("TB_ENV", None)
            argv = [sys.executable, "-I", "-c", code]  # -I: a fresh interpreter, no cwd on path
        return subprocess.run(
            argv,
            cwd=self.cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT_S,
            check=False,
        )


def _docs_database(suite_url: str, tmp: Path) -> str:
    """A database of the docs' own, migrated and empty: the pages share it in reading order, and
    under pytest-xdist other tests of the same worker empty the suite's database between them."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from service.migrate import upgrade

    if not suite_url.startswith("postgresql"):
        url = f"sqlite:///{tmp / 'docs.db'}"
    else:
        base = make_url(suite_url)
        name = f"{base.database}_docs"
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        url = base.set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    return url


# Session-scoped: under pytest-xdist other modules' tests run between the pages on their worker,
# and a module-scoped server would be torn down and started afresh between README.md and
# docs/reports.md (which reads what README.md made).
@pytest.fixture(scope="session")
def docs_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LiveServer, str, Path, str]]:
    """A first ``trialbook serve`` on a fresh database of the docs' own, and the admin key it
    printed."""
    tmp = tmp_path_factory.mktemp("docs")
    database_url = _docs_database(os.environ["TRIALBOOK_DATABASE_URL"], tmp)
    server = LiveServer(
        database_url=database_url,
        log=tmp / "server.log",
        cli=True,
        # the docs register a webhook to an example host: allow it without a DNS answer
        env={"TRIALBOOK_WEBHOOK_ALLOW_PRIVATE": "1"},
    )
    with server:
        keys = KEY_LINE.findall(server.log.read_text(errors="replace"))
        assert len(keys) == 1, f"the first start printed no admin key:\n{server.log_tail()}"
        yield server, keys[0], scratch_checkout(tmp / "checkout"), database_url


# The pages share one server in reading order (docs/reports.md reads what README.md made): under
# pytest-xdist they all run on one worker, in order (`--dist loadgroup`, pyproject.toml).
# Pages already followed on a docs server (by the server's port): a page reads what the pages
# before it made, so each test first follows, once, every earlier page not yet followed there —
# under pytest-xdist the order in which a worker gets the pages is not the reading order.
_FOLLOWED: dict[int, set[Path]] = {}


@pytest.mark.xdist_group("docs")
@pytest.mark.parametrize("page", documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_shell_and_python_block_of_the_page_runs(
    page: Path, docs_server: tuple[LiveServer, str, Path, str], tmp_path: Path
) -> None:
    server = docs_server[0]
    followed = _FOLLOWED.setdefault(server.port, set())
    pages = documents()
    for i, earlier in enumerate(pages[: pages.index(page) + 1]):
        if earlier not in followed:
            followed.add(earlier)
            _follow(earlier, docs_server, tmp_path / f"state-{i}")


def _follow(page: Path, docs_server: tuple[LiveServer, str, Path, str], state: Path) -> None:
    """Run every shell and Python block of ``page`` in order, as a reader would."""
    server, admin_key, checkout, database_url = docs_server
    env = reader_environment(database_url, admin_key, server.url)
    reader = Reader(checkout, env, server.url, state)
    ran = 0
    for block in parse_blocks(page):
        if block.kind is None or block.not_run is not None:
            continue
        done = reader.run(block)
        ran += 1
        if os.environ.get("DOCS_RUN_VERBOSE"):  # a transcript: DOCS_RUN_VERBOSE=1 pytest -s
            head = f"\n=== {block.where} ({block.lang}) exit {done.returncode}\n"
            print(head + done.stdout + done.stderr)
        if block.expect_error is not None:
            assert done.returncode != 0, (
                f"{block.where}: the block marked expect-error ({block.expect_error}) succeeded\n"
                f"--- output ---\n{(done.stdout + done.stderr)[-4000:]}"
            )
            continue
        assert done.returncode == 0, (
            f"{block.where}: the {block.lang} block exited {done.returncode}\n"
            f"--- block ---\n{block.code}--- output ---\n{(done.stdout + done.stderr)[-4000:]}\n"
            f"--- server log ---\n{server.log_tail(2000)}"
        )
    assert ran > 0 or not any(b.kind for b in parse_blocks(page)), f"{page}: no block ran"


def test_every_marker_gives_a_reason_and_marks_a_runnable_block() -> None:
    for page in documents():
        text = page.read_text(encoding="utf-8")
        for n, line in enumerate(text.splitlines(), 1):
            comment = line.strip().startswith("<!--")
            if comment and ("not-run" in line or "expect-error" in line):
                m = MARKER.match(line.strip())
                ok = m is not None and bool(m.group(2).strip())
                assert ok, f"{page}:{n}: malformed marker {line!r}"
        for block in parse_blocks(page):
            if block.not_run is not None or block.expect_error is not None:
                assert block.kind is not None, f"{block.where}: a marker on a block that never runs"


def test_the_parser_reads_languages_markers_and_line_numbers() -> None:
    text = (
        "# Page\n\n```sh\necho one\n```\n\n<!-- not-run: starts the server -->\n"
        "```bash\nmake run\n```\n```json\n{}\n```\n````python\nprint('```')\n````\n"
        "<!-- expect-error: no key is a 401 -->\n```sh\ncurl -s $API/v1/keys\n```\n"
    )
    blocks = parse_blocks(REPO / "README.md", text)
    assert [(b.line, b.lang, b.kind, b.not_run, b.expect_error) for b in blocks] == [
        (3, "sh", "shell", None, None),
        (8, "bash", "shell", "starts the server", None),
        (11, "json", None, None, None),
        (14, "python", "python", None, None),
        (18, "sh", "shell", None, "no key is a 401"),
    ]
    assert blocks[3].code == "print('```')\n"


def test_the_reader_fails_a_block_whose_request_fails_and_keeps_variables(tmp_path: Path) -> None:
    env = reader_environment("sqlite:///unused.db", "tb_x", "http://127.0.0.1:9")
    reader = Reader(tmp_path, env, "http://127.0.0.1:9", tmp_path / "state")

    def block(lang: str, code: str) -> Block:
        return Block(path=REPO / "README.md", line=1, lang=lang, code=code, not_run=None)

    assert (
        reader.run(block("sh", "GREETING=hello\nexport SHARED=$GREETING-there\n")).returncode == 0
    )
    assert reader.run(block("sh", 'test "$GREETING" = hello\n')).returncode == 0
    py = reader.run(block("python", "import os; print(os.environ['SHARED'])\n"))
    assert py.stdout.strip() == "hello-there", py.stderr
    # curl to a port nobody listens on, inside a pipeline and a command substitution
    failed = reader.run(block("sh", "X=$(curl -s http://127.0.0.1:9/ | cat)\necho unreachable\n"))
    assert failed.returncode != 0 and "unreachable" not in failed.stdout
    assert reader.run(block("python", "raise SystemExit(3)\n")).returncode == 3
    assert str(REPO / ".venv") not in env["PATH"]


def test_the_reader_fails_a_block_that_gets_an_http_error(
    docs_server: tuple[LiveServer, str, Path, str], tmp_path: Path
) -> None:
    server, admin_key, checkout, database_url = docs_server
    env = reader_environment(database_url, admin_key, server.url)
    reader = Reader(checkout, env, server.url, tmp_path / "state")
    auth = '-H "Authorization: Bearer $TRIALBOOK_API_KEY"'
    code = f"curl -s {DOCS_URL}/v1/experiments/no-such-experiment {auth}\n"
    done = reader.run(Block(path=REPO / "README.md", line=1, lang="sh", code=code, not_run=None))
    assert done.returncode == 22, done.stdout + done.stderr  # curl's exit code for HTTP >= 400
    assert "not_found" in done.stdout
