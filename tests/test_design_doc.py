"""``docs/design.md``, README and the other documents cannot drift silently from the code.

Every command and option it writes must exist in the CLI, every benchmark and option in the
benchmark scripts, every path in the repository, every test it cites in the failure table; its
asset graph must be the code location's, node for node and edge for edge; every job, sensor,
schedule, asset and asset check it names must be defined. The serving alert rules the document
points at must name metrics, labels and label values the service really exports. README and
``docs/*.md`` are held to the same commands, options, paths and links; README stays short and
starts with the two commands a fresh machine runs, the second being what ``.ci/run`` runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import typer.main
import yaml  # type: ignore[import-untyped]
from prometheus_client import Counter, Gauge, Histogram

from fitpulse_orchestration.cli import app
from fitpulse_orchestration.definitions import build_definitions
from fitpulse_orchestration.push.service import FALLBACKS as PUSH_FALLBACKS
from fitpulse_orchestration.server.app import _Metrics
from fitpulse_orchestration.serving.feed_types import FALLBACKS as FEED_FALLBACKS
from fitpulse_orchestration.settings import ProjectHome

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "design.md"
RULES = REPO / "deploy" / "prometheus" / "alerts.yaml"
TEXT = DOC.read_text()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`]+)`")

pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")


DOCUMENTS = ("README.md", "docs/pipeline.md", "docs/serving.md", "docs/operating.md")
"""The documents besides the design held to its commands, paths and links."""
README_MAX_LINES = 200


def _code(text: str = TEXT) -> list[str]:
    """Every fenced block, then every inline code span (its line breaks made spaces)."""
    blocks = [body for _, body in FENCE.findall(text)]
    prose = FENCE.sub("", text)
    return blocks + [" ".join(span.split()) for span in INLINE.findall(prose)]


def _mermaid(marker: str) -> str:
    (block,) = [b for lang, b in FENCE.findall(TEXT) if lang == "mermaid" and marker in b]
    return block


@pytest.fixture(scope="module")
def defs(tmp_path_factory: pytest.TempPathFactory) -> dg.Definitions:
    return build_definitions(ProjectHome(tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="module")
def graph(defs: dg.Definitions) -> Any:
    return defs.resolve_asset_graph()


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(text: str) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", FENCE.sub("", text), re.M)}


# -- the document as a document ------------------------------------------------------------


def test_readme_links_the_design_document() -> None:
    assert "](docs/design.md)" in (REPO / "README.md").read_text()


def test_internal_links_resolve_and_nothing_is_left_to_fill() -> None:
    anchors = _anchors(TEXT)
    links = re.findall(r"\]\(#([^)]+)\)", TEXT)
    assert len(links) >= 8
    assert not [link for link in links if link not in anchors]
    for question in range(1, 8):
        assert re.search(rf"^## {question}\. ", TEXT, re.M), f"question {question} unanswered"
    assert not re.search(r"PLACEHOLDER|TODO|TBD|XXX", TEXT)


# -- commands --------------------------------------------------------------------------------


def _commands(text: str = TEXT) -> Iterator[tuple[list[str], list[str]]]:
    """(subcommand path, options) for every ``fitpulse ...`` written in code."""
    for code in _code(text):
        for match in re.finditer(r"(?<![\w/.-])fitpulse((?:[ \t]+[a-z][a-z|-]*)+)(.*)", code):
            words = match.group(1).split()
            options = re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", match.group(2).split("fitpulse")[0])
            yield words, options


def _is_group(command: Any) -> bool:
    return hasattr(command, "commands")  # typer's group is not a click.Group subclass


def _resolve(words: list[str]) -> list[Any]:
    """The commands ``words`` names (``a|b`` names both), after the leading subcommand path."""
    found: list[Any] = [typer.main.get_command(app)]
    for word in words:
        group = found[0]
        if not _is_group(group):
            break  # the rest are arguments
        names = word.split("|")
        missing = [n for n in names if n not in group.commands]
        assert not missing, f"fitpulse {' '.join(words)}: no command {missing}"
        found = [group.commands[n] for n in names]
    return found


def _checked_commands(text: str) -> int:
    """Assert every ``fitpulse`` command and option in ``text`` exists; return how many."""
    seen = 0
    for words, options in _commands(text):
        for command in _resolve(words):
            assert not _is_group(command), f"fitpulse {' '.join(words)} is a group"
            known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
            unknown = [o for o in options if o not in known]
            assert not unknown, f"fitpulse {' '.join(words)}: unknown options {unknown}"
            seen += 1
    return seen


def test_every_fitpulse_command_and_option_exists() -> None:
    assert _checked_commands(TEXT) >= 20


def test_every_benchmark_and_its_options_exist() -> None:
    scripts = 0
    for code in _code():
        for match in re.finditer(r"benchmarks/(\w+\.py)([^`\n]*)", code):
            script = REPO / "benchmarks" / match.group(1)
            assert script.is_file(), script
            source = script.read_text()
            for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", match.group(2)):
                assert f'"{option}"' in source, f"{script.name} has no option {option}"
            scripts += 1
    assert scripts >= 8


# -- files and tests -------------------------------------------------------------------------


def _path_exists(path: str) -> bool:
    return any((base / path).exists() for base in (REPO, REPO / "fitpulse_orchestration"))


def _paths(text: str, blocks: bool = True) -> set[str]:
    """Repository paths written in code (``blocks=False``: inline spans only)."""
    paths: set[str] = set()
    spans = (
        _code(text)
        if blocks
        else [" ".join(s.split()) for s in INLINE.findall(FENCE.sub("", text))]
    )
    for code in spans:
        paths |= set(re.findall(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.(?:py|toml|yaml|md))", code))
    return paths


def test_every_path_exists() -> None:
    paths = _paths(TEXT)
    assert len(paths) >= 30
    assert not sorted(p for p in paths if not _path_exists(p))


def test_every_cited_test_exists() -> None:
    cited = re.findall(r"(tests/[\w/]+\.py)::(test_\w+)", TEXT)
    assert len(cited) >= 20
    for path, name in cited:
        assert re.search(rf"^def {name}\(", (REPO / path).read_text(), re.M), f"{path}::{name}"


# -- Dagster names ---------------------------------------------------------------------------


def test_the_asset_graph_is_the_code_locations(graph: Any) -> None:
    block = _mermaid("%% asset-graph")
    nodes = dict(re.findall(r"^\s*(\w+)\(\[(\w+)\]\)", block, re.M))
    assert all(node == label for node, label in nodes.items())
    groups: dict[str, str] = {}
    current = ""
    for line in block.splitlines():
        if m := re.match(r"\s*subgraph (\w+)_group \[(\w+)\]", line):
            assert m.group(1) == m.group(2)
            current = m.group(1)
        elif m := re.match(r"\s*(\w+)\(\[", line):
            groups[m.group(1)] = current
    edges = set(re.findall(r"^\s*(\w+) --> (\w+)\s*$", block, re.M))

    keys = list(graph.get_all_asset_keys())
    assert set(nodes) == {k.to_user_string() for k in keys}
    assert groups == {k.to_user_string(): graph.get(k).group_name for k in keys}
    assert edges == {
        (parent.to_user_string(), k.to_user_string())
        for k in keys
        for parent in graph.get(k).parent_keys
    }


def test_named_jobs_sensors_schedules_assets_and_checks_exist(
    defs: dg.Definitions, graph: Any
) -> None:
    jobs = {j.name for j in defs.jobs or []}
    sensors = {s.name for s in defs.sensors or []}
    schedules = {s.name for s in defs.schedules or []}
    assets = {k.to_user_string() for k in graph.get_all_asset_keys()}
    checks = {k.name for k in graph.asset_check_keys}
    code = "\n".join(_code())

    def names(pattern: str) -> set[str]:  # identifiers, not parts of paths or file names
        return set(re.findall(rf"(?<![\w/])(?:{pattern})(?![\w./])", code))

    named_sensors = names(r"[a-z_]+_job_on_[a-z]+|[a-z_]+_sensor")
    named_jobs = names(r"[a-z][a-z_]*_jobs?")
    named_schedules = names(r"[a-z][a-z_]*_schedule")
    # Every one is described, and nothing that does not exist.
    assert named_sensors == sensors
    assert named_jobs == jobs
    assert named_schedules == schedules

    prose = FENCE.sub("", TEXT)
    for kind, name in re.findall(r"\b(assets?|checks?)\s+`(\w+)`", prose):
        assert name in (assets if kind.startswith("asset") else checks), f"{kind} {name}"
    gate = re.search(r"\| check \| passes when \|.*?\n\n", prose, re.S)
    assert gate is not None
    gate_checks = set(re.findall(r"^\| `(\w+)` \|", gate.group(0), re.M))
    promotion = {k.name for k in graph.asset_check_keys if k.asset_key.path == ["promotion_gate"]}
    assert gate_checks == promotion


# -- the alert rules the document points at --------------------------------------------------

SELECTOR = re.compile(r"(fitpulse_[a-z_]+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!=|=)\s*"([^"]*)"')
KNOWN_VALUES = {
    "fallback": set(FEED_FALLBACKS),
    "outcome": {"send", "invalid", "no", *PUSH_FALLBACKS},
    "status": {"200", "400", "503"},
    "alias": {"champion", "challenger"},
}


def _exported() -> dict[str, tuple[str, ...]]:
    """Every sample name the service's registry can emit, with the metric's label names."""
    names: dict[str, tuple[str, ...]] = {}
    for metric in vars(_Metrics()).values():
        suffixes: tuple[str, ...]
        if isinstance(metric, Histogram):
            suffixes = ("_bucket", "_count", "_sum")
        elif isinstance(metric, Counter):
            suffixes = ("_total",)
        elif isinstance(metric, Gauge):
            suffixes = ("",)
        else:
            continue
        for suffix in suffixes:
            labels = tuple(metric._labelnames) + (("le",) if suffix == "_bucket" else ())
            names[metric._name + suffix] = labels
    return names


def _rules() -> list[dict[str, Any]]:
    body = yaml.safe_load(RULES.read_text())
    return [rule for group in body["groups"] for rule in group["rules"]]


def test_alert_rules_are_complete_routed_and_linked() -> None:
    rules = _rules()
    assert "deploy/prometheus/alerts.yaml" in TEXT
    assert len(rules) >= 8
    assert len({r["alert"] for r in rules}) == len(rules)
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"page", "ticket"}
        assert rule["labels"]["team"] == "ml-platform"
        assert re.fullmatch(r"\d+m", rule["for"])
        assert rule["annotations"]["summary"]
        doc, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert anchor in _anchors((REPO / doc).read_text()), rule["annotations"]["runbook"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r["alert"])
def test_alert_rules_select_exported_metrics(rule: dict[str, Any]) -> None:
    exported = _exported()
    selectors = SELECTOR.findall(rule["expr"])
    assert selectors, "a rule without a fitpulse metric"
    for name, matchers in selectors:
        assert name in exported, f"{name} is not exported by server/app.py"
        for label, op, value in MATCHER.findall(matchers):
            assert label in exported[name], f"{name} has no label {label!r}"
            if label in KNOWN_VALUES and op != "!=":
                values = value.split("|") if op == "=~" else [value]
                assert set(values) <= KNOWN_VALUES[label], f"{label}={value}"
    for clause in re.findall(r"by \(([^)]*)\)", rule["expr"]):
        for label in (x.strip() for x in clause.split(",")):
            assert label in {"le", "instance"}, f"grouping by {label!r}"


# -- README and the other documents ----------------------------------------------------------


def _broken_links(name: str) -> list[str]:
    """Relative links of document ``name`` whose file or heading anchor does not exist."""
    source = REPO / name
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", source.read_text())):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        file = (source.parent / path).resolve() if path else source
        if not file.exists():
            broken.append(target)
        elif anchor and (file.suffix != ".md" or anchor not in _anchors(file.read_text())):
            broken.append(target)
    return broken


@pytest.mark.parametrize("name", DOCUMENTS)
def test_documents_name_real_commands_paths_and_links(name: str) -> None:
    text = (REPO / name).read_text()

    _checked_commands(text)
    # Inline spans only: README's layout block names files under their folders.
    assert not sorted(p for p in _paths(text, blocks=False) if not _path_exists(p))
    assert not _broken_links(name)


def test_design_document_links_resolve() -> None:
    assert not _broken_links("docs/design.md")


def test_readme_is_short_and_starts_with_the_two_fresh_machine_commands() -> None:
    text = (REPO / "README.md").read_text()
    demo, tests = [body.strip() for _, body in FENCE.findall(text)[:2]]

    assert len(text.splitlines()) <= README_MAX_LINES
    assert demo.startswith("python3 -m venv .venv")
    assert demo.endswith("fitpulse demo")
    assert tests.startswith("python3 -m venv .venv")
    assert tests.endswith(".venv/bin/pytest")
    assert text.index(demo) < text.index(tests) < text.index("\n## ")
    # CI runs README's test command (with its own flags).
    assert re.search(r"^\S*\.venv/bin/pytest\b", (REPO / ".ci" / "run").read_text(), re.M)
    for document in ("docs/design.md", *DOCUMENTS[1:], "benchmarks/README.md"):
        assert f"]({document})" in text, f"README does not link {document}"


# -- measured figures stand in one document ------------------------------------------------

_RATE = r"(?:lines|events|rows|records|items|feeds|req)/s"
WITH_UNIT = re.compile(
    r"(?<![\w.,])(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+)"
    rf"(?P<unit>[KM] ?{_RATE}|\s?(?:{_RATE}|MB/s|ms|µs|s|min|h|[KMG]iB|[KMG]B|%|x|cores)| B)"
    r"(?![\w/])"
)
"""A number with a decimal point or a thousands comma, then a unit: ``1.24 s``, ``2,808 cores``."""
DECIMAL = re.compile(r"(?<![\w.])(?P<sign>[+-]?)(?P<digits>\d+\.\d{3,})(?!\w|\.\d)")
"""A decimal with three places or more: ``0.0417``, ``+0.021`` (a range's dash is no sign)."""
PAIR_GAP = 60
"""Characters at most between the two unsigned decimals of a pair, within one paragraph."""

REPEATED_FIGURES = (
    # An assumption, not a measurement: the peak hour's factor over the average hour
    # (`capacity_bench.py --peak-factor`), also the fleet's margin for the loss of a zone.
    "1.5x",
    # Two measurements that happen to agree: the tiny world's worst skew (operating.md) and the
    # share of label-1 rows in training_scale_bench.py's ranker data (benchmarks/README.md).
    "1.5%",
    # Two measurements that happen to agree: the demo's two-tower training (pipeline.md) and the
    # exact index build of 1M two-tower vectors (benchmarks/README.md).
    "1.6 s",
)
"""Tokens more than one document may hold, each with why it is not one figure written twice."""


def _figures(text: str) -> set[str]:
    """The measured-figure tokens of ``text``.

    Three kinds: a number with a decimal point or a thousands comma followed by a unit of
    time, size, throughput, share or ratio (``14.0 ms``, ``28.4K lines/s``, ``31.4x``); a signed
    decimal with three places or more (a difference or an interval bound: ``+0.021``); and two
    unsigned decimals with three places or more that follow each other within ``PAIR_GAP``
    characters of one paragraph (``0.0395 .. 0.0150``: a table row, a value against its
    baseline, an interval). A lone unsigned metric value is not a token: among thousands of
    NDCG and recall values in [0, 1] a match by chance is likely, a matching pair is not. Values
    0 and 1 (``0.0000``, ``1.0000``) identify nothing and are skipped.
    """
    tokens = set()
    for match in WITH_UNIT.finditer(text):
        unit = " ".join(match.group("unit").split())
        glue = "" if unit[0] in "KM%x" else " "
        tokens.add(match.group("num") + glue + unit)
    unsigned = []
    for match in DECIMAL.finditer(text):
        if float(match.group("digits")) in (0.0, 1.0):
            continue
        if match.group("sign"):
            tokens.add(match.group("sign") + match.group("digits"))
        else:
            unsigned.append(match)
    for first, second in pairwise(unsigned):
        between = text[first.end() : second.start()]
        if len(between) <= PAIR_GAP and "\n\n" not in between:
            tokens.add(f"{first.group('digits')} .. {second.group('digits')}")
    return tokens


def test_measured_figures_stand_in_one_document() -> None:
    """A measured figure is written in one document; the others link to the section holding it.

    Benchmark measurements live in ``benchmarks/README.md``, and the measured outcomes of the
    demo and the tests (evaluation tables, gate intervals, drift shares) in the one document that
    explains them; a second copy goes stale when the first is re-measured. The scan covers
    README, ``docs/*.md`` and ``benchmarks/README.md`` whole, fenced blocks included: the worked
    sessions record their results in the comments of their command blocks. Tokens are narrow
    (``_figures``): integers and two-place decimals (parameters, sizes, thresholds, targets) are
    not compared. ``REPEATED_FIGURES`` names the few tokens several documents may hold.
    """
    names = ["README.md", *sorted(f"docs/{p.name}" for p in DOC.parent.glob("*.md"))]
    where: dict[str, list[str]] = {}
    for name in [*names, "benchmarks/README.md"]:
        for token in _figures((REPO / name).read_text()):
            where.setdefault(token, []).append(name)
    repeated = {token: files for token, files in sorted(where.items()) if len(files) > 1}
    unexplained = [f"{t}: {', '.join(f)}" for t, f in repeated.items() if t not in REPEATED_FIGURES]
    assert not unexplained, "measured figures in more than one document:\n" + "\n".join(unexplained)
    assert set(REPEATED_FIGURES) <= set(repeated), "an allowed repeat no longer repeats"
