"""Text and markdown for ``suspects``, ``bisect`` and ``diff``, built from their models with
the same blocks as the run report (:mod:`testmon_live.tui.reports.document`), so all reports
look alike."""

from __future__ import annotations

import shlex

from testmon_live.tui.reports.diff import DiffModel, Moved, RunBrief
from testmon_live.tui.reports.document import (
    Block,
    Bullets,
    Code,
    Column,
    Line,
    Prose,
    Section,
    Table,
    Verbatim,
)
from testmon_live.tui.reports.formatting import fmt_duration, fmt_percent, plural

from .bisect import BisectResult
from .order import SuspectsModel

TEST = Column("test", squeeze="end", code=True)


def _signed(seconds: float) -> str:
    return ("+" if seconds >= 0 else "-") + fmt_duration(abs(seconds))


# ------------------------------------------------------------------- suspects


def suspects_sections(model: SuspectsModel) -> list[Section]:
    preds = model["predecessors"]
    intro: list[Line] = [
        (
            "test ",
            Code(model["test"]),
            f" ({model['outcome']}) ran on ",
            Code(model["worker"]),
            " of run ",
            Code(model["run"]),
            f" after {len(preds)} other tests",
        ),
    ]
    if model["order_plugins"]:
        seed = model["seed"] or "unknown"
        intro.append((f"order shuffled by {', '.join(model['order_plugins'])}, seed {seed}",))
    if model["order"] == "history":
        intro.append(
            (
                "order changed by ",
                Code("--monitor-order=history"),
                " (longest first by earlier runs): the command below replays the order it ran in",
            )
        )
    sections = [Section(("Suspects of ", Code(model["test"])), [Prose(intro)])]
    if preds:
        rows = [
            (str(p["position"]), p["nodeid"], p["outcome"], fmt_duration(p["duration"]))
            for p in preds
        ]
        columns = (Column("#", right=True), TEST, Column("outcome"), Column("time", right=True))
        sections.append(
            Section(
                ("Ran before it on ", Code(model["worker"]), ", in order"), [Table(columns, rows)]
            )
        )
    bisect_line = f"testmon bisect {shlex.quote(model['run'])} {shlex.quote(model['test'])}"
    sections.append(
        Section(
            ("Reproduce that order serially (node ids in ", Code(model["ids_file"]), ")"),
            [
                Verbatim([model["command"]]),
                Prose([("find the polluter:",)]),
                Verbatim([bisect_line]),
            ],
        )
    )
    return sections


# --------------------------------------------------------------------- bisect


def bisect_sections(result: BisectResult, test: str) -> list[Section]:
    verdict_words = {
        "polluter": "polluter found",
        "fails-alone": "no polluter",
        "not-reproduced": "not reproducible",
        "timeout": "time limit reached",
        "error": "could not search",
    }
    verdict = verdict_words.get(result.verdict, result.verdict)
    blocks: list[Block] = [Prose([(f"{verdict}: {result.message}",)])]
    if result.culprit:
        blocks.append(Verbatim([result.culprit]))
    runs = f"{plural(len(result.trials), 'pytest run')} (at most {result.bound} for this search)"
    blocks.append(Prose([(runs,)]))
    rows = [
        (str(n), t.label, str(len(t.ids)), t.outcome, fmt_duration(t.seconds))
        for n, t in enumerate(result.trials, start=1)
    ]
    columns = (
        Column("#", right=True),
        Column("run", squeeze="start"),
        Column("before", right=True),
        Column("target"),
        Column("time", right=True),
    )
    return [
        Section(("Bisect of ", Code(test)), blocks),
        Section(("Runs",), [Table(columns, rows)]),
    ]


def bisect_model(result: BisectResult, test: str) -> dict[str, object]:
    return {
        "bisect_version": 1,
        "test": test,
        "verdict": result.verdict,
        "message": result.message,
        "culprit": result.culprit,
        "bound": result.bound,
        "runs": [
            {"label": t.label, "before": len(t.ids), "outcome": t.outcome, "seconds": t.seconds}
            for t in result.trials
        ],
    }


# ----------------------------------------------------------------------- diff


def _brief_row(name: str, run: RunBrief) -> tuple[str, ...]:
    failing = run["counts"].get("failed", 0) + run["counts"].get("error", 0)
    return (
        name,
        run["run"],
        str(run["workers"]),
        str(run["tests"]),
        str(failing),
        fmt_duration(run["wall"]),
        fmt_percent(run["efficiency"]),
        fmt_duration(run["lock_wait"]),
        f"{run['containers']} / {fmt_duration(run['container_startup'])}",
    )


def diff_sections(model: DiffModel) -> list[Section]:
    parts = (
        _compared(model),
        _changed(model),
        _moved("Slower", model["slower"]),
        _moved("Faster", model["faster"]),
        _fixtures_moved(model),
        _locks_moved(model),
        _one_side(model),
        _flaky(model),
    )
    return [section for section in parts if section is not None]


def _compared(model: DiffModel) -> Section:
    a, b = model["a"], model["b"]
    columns = (
        Column(""),
        Column("run", code=True),
        Column("workers", right=True),
        Column("tests", right=True),
        Column("failing", right=True),
        Column("wall", right=True),
        Column("efficiency", right=True),
        Column("lock wait", right=True),
        Column("containers / startup", right=True),
    )
    change = (
        f"wall {_signed(b['wall'] - a['wall'])}, efficiency "
        f"{fmt_percent(a['efficiency'])} -> {fmt_percent(b['efficiency'])}"
    )
    table = Table(columns, [_brief_row("A", a), _brief_row("B", b)])
    said: list[Line] = [(change,)]
    if a["workers"] != b["workers"]:
        said.append(
            (
                f"A ran on {a['workers']} workers, B on {b['workers']}: a test's time moves "
                "with what ran beside it and with which worker set up the session fixtures",
            )
        )
    return Section(("Runs compared",), [table, Prose(said)])


def _changed(model: DiffModel) -> Section | None:
    if not model["changed"]:
        return None
    rows = [
        (c["change"], c["nodeid"], c["a"], c["b"], c["history"] or "-", "flaky" * c["flaky"])
        for c in model["changed"]
    ]
    columns = (Column("change"), TEST, Column("A"), Column("B"), Column("history"), Column(""))
    blocks: list[Block] = [Table(columns, rows)]
    for c in model["changed"]:
        before = c["before"]
        items: list[Line] = []
        for side, ids, more, worker in (
            ("B", before["only_in_b"], before["more_only_in_b"], before["worker_b"]),
            ("A", before["only_in_a"], before["more_only_in_a"], before["worker_a"]),
        ):
            if ids:
                tail = f" and {more} more" if more else ""
                items.append((f"ran before it only in {side} (on {worker}): ", *_codes(ids), tail))
        if items:
            blocks.append(Prose([("what differed before ", Code(c["nodeid"]), ":")]))
            blocks.append(Bullets(items))
    return Section(("Outcomes that changed",), blocks)


def _moved(title: str, moved: list[Moved]) -> Section | None:
    if not moved:
        return None
    rows = [
        (m["nodeid"], fmt_duration(m["a"]), fmt_duration(m["b"]), _signed(m["delta"]))
        for m in moved
    ]
    columns = (TEST, Column("A", right=True), Column("B", right=True), Column("change", right=True))
    return Section((title,), [Table(columns, rows)])


def _fixtures_moved(model: DiffModel) -> Section | None:
    if not model["fixtures"]:
        return None
    rows = [
        (
            f["name"],
            f["scope"],
            f"{f['a_count']}x {fmt_duration(f['a_total'])}",
            f"{f['b_count']}x {fmt_duration(f['b_total'])}",
            _signed(f["delta"]),
        )
        for f in model["fixtures"]
    ]
    columns = (
        Column("fixture", code=True),
        Column("scope"),
        Column("A setup", right=True),
        Column("B setup", right=True),
        Column("change", right=True),
    )
    return Section(("Fixtures whose setup time moved",), [Table(columns, rows)])


def _locks_moved(model: DiffModel) -> Section | None:
    if not model["locks"]:
        return None
    rows = [
        (
            lk["kind"],
            lk["key"],
            fmt_duration(lk["a_wait"]),
            fmt_duration(lk["b_wait"]),
            _signed(lk["delta"]),
        )
        for lk in model["locks"]
    ]
    columns = (
        Column("kind"),
        Column("lock", code=True, squeeze="end"),
        Column("A wait", right=True),
        Column("B wait", right=True),
        Column("change", right=True),
    )
    return Section(("Lock waits that moved",), [Table(columns, rows)])


def _one_side(model: DiffModel) -> Section | None:
    only_a, only_b = len(model["only_in_a"]), len(model["only_in_b"])
    if not only_a and not only_b:
        return None
    return Section(
        ("Tests in one run only",), [Prose([(f"{only_a} only in A, {only_b} only in B",)])]
    )


def _flaky(model: DiffModel) -> Section | None:
    if not model["flaky"]:
        return None
    rows = [
        (f["nodeid"], str(f["passes"]), str(f["failures"]), f["history"]) for f in model["flaky"]
    ]
    columns = (TEST, Column("passed", right=True), Column("failed", right=True), Column("history"))
    title = f"Flaky over the last {model['history_runs']} recorded runs"
    return Section((title,), [Table(columns, rows)])


def _codes(ids: list[str]) -> list[str]:
    parts: list[str] = []
    for n, nodeid in enumerate(ids):
        if n:
            parts.append(", ")
        parts.append(Code(nodeid))
    return parts
