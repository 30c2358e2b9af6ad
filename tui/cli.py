"""The ``testmon`` command: one sub-command per entry of :data:`COMMANDS`.

Adding a sub-command (tui, replay, demo, dump, ...) touches nothing of the others: write
``_NAME_arguments(parser)`` and ``_NAME(args) -> int`` below and add one
:class:`Command` line to :data:`COMMANDS`. Import what the command needs *inside* its
run function: this module must not import Textual (``testmon runs`` and ``testmon report``
start fast), and ``tests/test_cli_report.py`` checks that it does not.

Errors a user can cause (unknown run, ambiguous prefix, unreadable or foreign file, log of
a newer schema) are raised as :class:`~testmon_live.plugin.runlog.RunLogError` or
:class:`CommandError` and printed by :func:`main` as one line on stderr, never as a
traceback; see the ``EXIT_*`` codes.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import textwrap
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from testmon_live.plugin.events import SCHEMA_VERSION
from testmon_live.plugin.runlog import (
    MonitorDir,
    RunLogError,
    SchemaTooNew,
    find_monitor_dir,
    iter_log,
)
from testmon_live.tui.predict import DISTS, ORDERS

if TYPE_CHECKING:
    from testmon_live.plugin.state import RunState

    from .dashboard.sources import Source
    from .forensics.order import Suspects

PROG = "testmon"
FORMATS = ("text", "markdown", "json")
HELP_WIDTH = 79
EXIT_OK = 0
EXIT_ERROR = 1
"""The command could not do its job: no such run, unreadable log, no runs recorded yet."""
EXIT_USAGE = 2
"""Bad command line (argparse's own code)."""
EXIT_SCHEMA = 3
"""The log was written by a newer testmon-live: upgrade to read it."""
EXIT_INTERRUPTED = 130
DEBUG_ENV = "TESTMON_DEBUG"
"""Set to 1 to get a traceback for unexpected errors."""

EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}  done
  {EXIT_ERROR}  no such run, unreadable or foreign log, no runs recorded yet
  {EXIT_USAGE}  bad command line
  {EXIT_SCHEMA}  the log was written by a newer testmon-live (upgrade to read it)
"""


class CommandError(Exception):
    """A failure to report as one line on stderr, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Command:
    """One sub-command: its parser setup and what it runs."""

    name: str
    summary: str
    """One line for ``testmon --help``."""
    description: str
    """What ``testmon NAME --help`` says above the options."""
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    epilog: str = ""


def version() -> str:
    try:
        return metadata.version("testmon-live")
    except metadata.PackageNotFoundError:
        return "unknown"


# ------------------------------------------------------------ shared arguments

HELP_DIR = (
    "the monitor folder holding runs/ (default: $TESTMON_DIR, else the nearest .testmon "
    "folder from the current directory upwards)"
)
HELP_RUN = (
    "the run: its id, a unique prefix of the id, `latest`, or the path of a .jsonl log "
    "(default: latest)"
)


def add_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", metavar="DIR", type=Path, default=None, help=HELP_DIR)


def add_run_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", nargs="?", default="latest", help=HELP_RUN)


def add_format_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "-f",
        "--format",
        choices=FORMATS,
        default="text",
        metavar="FORMAT",
        help=f"{what}: text (default; fits a terminal of 100 columns or more, whole lines "
        "into a pipe or a file), markdown (for a CI "
        "job summary, e.g. $GITHUB_STEP_SUMMARY) or json (for scripts; see "
        "docs/report-json.md)",
    )
    parser.add_argument(
        "--json", dest="format", action="store_const", const="json", help="--format json"
    )


def monitor_dir(args: argparse.Namespace) -> MonitorDir:
    directory: Path | None = args.dir
    if directory is None:
        return find_monitor_dir()
    if not directory.is_dir():
        what = "a file, not a folder" if directory.exists() else "no such folder"
        raise CommandError(f"--dir {directory}: {what}")
    return MonitorDir(directory)


def write(text: str) -> None:
    """Print a command's output; flushed here, so a closed pipe is noticed in :func:`main`."""
    sys.stdout.write(text)
    sys.stdout.flush()


# ------------------------------------------------------------------------ runs


def _runs_arguments(parser: argparse.ArgumentParser) -> None:
    add_dir_option(parser)
    add_format_option(parser, "output format")
    parser.add_argument(
        "--limit", "-n", type=int, default=None, metavar="N", help="list only the newest N runs"
    )


def _runs(args: argparse.Namespace) -> int:
    from .reports.logs import record_hint
    from .reports.render import render
    from .reports.run_list import build_runs, list_runs
    from .reports.sections import runs_sections

    if args.limit is not None and args.limit < 1:
        raise CommandError(f"--limit {args.limit}: give a number of runs, 1 or more", EXIT_USAGE)
    mdir = monitor_dir(args)
    listing = list_runs(mdir)
    if not listing.runs and not listing.unlisted:
        raise CommandError(record_hint(mdir))
    write(render(args.format, build_runs(listing, args.limit), runs_sections))
    return EXIT_OK


def _runs_epilog() -> str:
    from .reports.logs import STATUS_HELP

    width = max(len(s) for s in STATUS_HELP)
    lines = [f"  {status:<{width}}  {meaning}" for status, meaning in STATUS_HELP.items()]
    return "status:\n" + "\n".join(lines) + "\n\n" + EXIT_CODES_HELP


# ---------------------------------------------------------------------- report


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser)
    add_dir_option(parser)
    add_format_option(parser, "report format")
    parser.add_argument(
        "--top",
        type=int,
        default=10,
        metavar="N",
        help="how many slowest tests, costliest fixtures and database waits to list "
        "(1..50, default 10)",
    )


def _report(args: argparse.Namespace) -> int:
    from .reports.logs import load_run, resolve_run
    from .reports.model import MAX_TOP, build_report
    from .reports.render import render
    from .reports.sections import sections

    if not 1 <= args.top <= MAX_TOP:
        raise CommandError(f"--top {args.top}: give a number from 1 to {MAX_TOP}", EXIT_USAGE)
    mdir = monitor_dir(args)
    path = resolve_run(mdir, args.run)
    run = load_run(path, mdir)
    write(render(args.format, build_report(run, args.top), sections))
    return EXIT_OK


REPORT_EPILOG = f"""\
examples:
  testmon report                                   the latest run, for a terminal
  testmon report 20261121-2032                     a run by a prefix of its id
  testmon report --format markdown >> "$GITHUB_STEP_SUMMARY"
  testmon report path/to/run.jsonl --format json | jq .totals

{EXIT_CODES_HELP}"""


# -------------------------------------------------------------------- forensics


def _test_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help=HELP_RUN.replace(" (default: latest)", ""))
    parser.add_argument(
        "test", metavar="TEST", help="the test: its node id, or a unique part of it"
    )
    parser.add_argument(
        "--worker",
        metavar="ID",
        default=None,
        help="the worker whose run of TEST to take (when it ran on several, e.g. --dist each; "
        "default: a failing run)",
    )
    add_dir_option(parser)


def _suspects_arguments(parser: argparse.ArgumentParser) -> None:
    _test_arguments(parser)
    add_format_option(parser, "output format")


def _load_state(args: argparse.Namespace) -> tuple[MonitorDir, Path, RunState]:
    from .reports.diff import load_detail
    from .reports.logs import resolve_run

    mdir = monitor_dir(args)
    path = resolve_run(mdir, args.run)
    return mdir, path, load_detail(path)


def _found(args: argparse.Namespace) -> tuple[MonitorDir, Suspects]:
    from .forensics.order import OrderError, suspects

    mdir, _, state = _load_state(args)
    try:
        return mdir, suspects(state, args.test, args.worker)
    except OrderError as exc:
        raise CommandError(str(exc)) from None


def _suspects(args: argparse.Namespace) -> int:
    from .forensics.order import repro_name, suspects_model, write_ids
    from .forensics.render import suspects_sections
    from .reports.render import render

    mdir, found = _found(args)
    ids = [t.nodeid for t in found.predecessors] + [found.target.nodeid]
    ids_file = write_ids(mdir, repro_name(found), ids)
    model = suspects_model(found, ids_file)
    write(render(args.format, model, suspects_sections))
    return EXIT_OK


def _bisect_arguments(parser: argparse.ArgumentParser) -> None:
    _test_arguments(parser)
    add_format_option(parser, "result format")
    parser.add_argument(
        "--time-limit",
        type=positive_number,
        default=600.0,
        metavar="SECONDS",
        help="stop searching after this long (default 600)",
    )


def _bisect(args: argparse.Namespace) -> int:
    from .forensics.bisect import BisectRefused, bisect
    from .forensics.order import OrderError, trusted_rootdir
    from .forensics.render import bisect_model, bisect_sections
    from .reports.document import printable
    from .reports.render import render

    if args.time_limit <= 0:
        raise CommandError("--time-limit: give a number of seconds above 0", EXIT_USAGE)
    mdir, found = _found(args)
    try:
        rootdir = trusted_rootdir(found, mdir, Path.cwd())
    except OrderError as exc:
        raise CommandError(str(exc)) from None
    extra: list[str] = getattr(args, "passthrough", [])

    def progress(line: str) -> None:
        print(printable(line), file=sys.stderr, flush=True)

    if args.format == "text":
        progress(
            f"bisecting {len(found.predecessors)} predecessors of {found.target.nodeid} "
            f"(worker {found.target.w}), in {found.rootdir}"
        )
    try:
        result = bisect(
            found, rootdir=rootdir, time_limit=args.time_limit, extra=extra, progress=progress
        )
    except BisectRefused as exc:
        raise CommandError(str(exc)) from None
    model = bisect_model(result, found.target.nodeid)
    write(render(args.format, model, lambda _: bisect_sections(result, found.target.nodeid)))
    return (
        EXIT_OK if result.verdict in ("polluter", "fails-alone", "not-reproduced") else EXIT_ERROR
    )


def _diff_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_a", metavar="RUN_A", help="the earlier run (id, prefix, path)")
    parser.add_argument(
        "run_b",
        metavar="RUN_B",
        nargs="?",
        default="latest",
        help="the later run (default: latest)",
    )
    add_dir_option(parser)
    add_format_option(parser, "output format")
    parser.add_argument(
        "--top",
        type=int,
        default=10,
        metavar="N",
        help="how many moved tests, fixtures and locks to list (default 10)",
    )


def _diff(args: argparse.Namespace) -> int:
    from .forensics.render import diff_sections
    from .reports.diff import build_diff, history, load_detail
    from .reports.logs import resolve_run
    from .reports.render import render

    if args.top < 1:
        raise CommandError(f"--top {args.top}: give a number, 1 or more", EXIT_USAGE)
    mdir = monitor_dir(args)
    path_a, path_b = resolve_run(mdir, args.run_a), resolve_run(mdir, args.run_b)
    if path_a.resolve() == path_b.resolve():
        raise CommandError(f"{args.run_a} and {args.run_b} are the same run: name two runs")
    a, b = load_detail(path_a), load_detail(path_b)
    model = build_diff(a, b, history(mdir, (a, b)), args.top)
    write(render(args.format, model, diff_sections))
    return EXIT_OK


EXPORT_FORMATS = ("perfetto", "junit")


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser)
    add_dir_option(parser)
    parser.add_argument(
        "-f",
        "--format",
        choices=EXPORT_FORMATS,
        default="perfetto",
        metavar="FORMAT",
        help="perfetto (Chrome JSON trace: open it in ui.perfetto.dev; default) or junit (XML)",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="FILE",
        help="write here (default: .testmon/exports/RUN.json or .xml; - for stdout)",
    )


def _export(args: argparse.Namespace) -> int:
    from testmon_live.plugin.runlog import iter_log, private_folder, write_private

    from .reports.diff import load_detail
    from .reports.export import junit, perfetto
    from .reports.logs import resolve_run

    mdir = monitor_dir(args)
    path = resolve_run(mdir, args.run)
    state = load_detail(path)
    if args.format == "perfetto":
        text = perfetto(state, list(iter_log(path)))
        suffix = ".json"
    else:
        text = junit(state)
        suffix = ".xml"
    if str(args.output) == "-":
        write(text)
        return EXIT_OK
    output: Path = args.output or mdir.root / "exports" / f"{state.run_id}{suffix}"
    if args.output is None:
        private_folder(output.parent)
    write_private(output, text)
    hint = " (open it in https://ui.perfetto.dev)" if args.format == "perfetto" else ""
    print(f"wrote {output}{hint}", file=sys.stderr)
    return EXIT_OK


# -------------------------------------------------------------------- dashboard


def _tui_arguments(parser: argparse.ArgumentParser) -> None:
    add_dir_option(parser)
    parser.add_argument(
        "run",
        metavar="RUN",
        nargs="?",
        default=None,
        help="a recorded run to open (id, prefix, `latest` or path of a .jsonl log); "
        "without it, the newest live run, else the last recorded one until a run starts",
    )
    add_speed_option(parser)


def positive_number(text: str) -> float:
    """argparse type: a finite number above 0 (``nan``, ``inf``, 0 and below are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number above 0")
    return value


def add_speed_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--speed",
        type=positive_number,
        default=None,
        metavar="N",
        help="play a recorded run from its start at N times real speed "
        "(default: open it at its end state)",
    )


def _open_dashboard(source: Source) -> int:
    from .dashboard.app import make_app

    make_app(source).run()
    return EXIT_OK


def _replay_source(args: argparse.Namespace) -> Source:
    from .dashboard.sources import ReplaySource
    from .reports.logs import resolve_run

    path = resolve_run(monitor_dir(args), args.run)
    # Refuse what is not a run log here, with the report's message and exit code, rather
    # than open a dashboard on nothing.
    events = iter_log(path)
    try:
        next(events)
    finally:
        events.close()
    return ReplaySource(path, speed=args.speed)


def _tui(args: argparse.Namespace) -> int:
    from .dashboard.sources import LiveSource

    if args.run is None:
        if args.speed is not None:
            raise CommandError("--speed needs a recorded RUN", EXIT_USAGE)
        return _open_dashboard(LiveSource(monitor_dir(args)))
    return _open_dashboard(_replay_source(args))


def _replay_arguments(parser: argparse.ArgumentParser) -> None:
    add_dir_option(parser)
    add_run_argument(parser)
    add_speed_option(parser)


def _replay(args: argparse.Namespace) -> int:
    return _open_dashboard(_replay_source(args))


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--headless",
        action="store_true",
        help="no dashboard: run the demo suite, then print its report (for machines "
        "without a terminal)",
    )
    parser.add_argument(
        "--path",
        type=Path,
        default=None,
        help="the demo suite (default: the bundled one, examples/demo of the source tree; "
        "installed from a wheel, it runs in a copy in ~/.cache/testmon-live/demo)",
    )
    parser.add_argument("-n", "--workers", type=int, default=4, help="xdist workers (default 4)")


def _demo(args: argparse.Namespace) -> int:
    from testmon_live.plugin.runlog import DEFAULT_DIRNAME

    from . import demo
    from .dashboard.sources import LiveSource
    from .reports.logs import load_run, newest_log
    from .reports.model import build_report
    from .reports.render import render
    from .reports.sections import sections

    try:
        path = demo.demo_dir(args.path)
    except demo.DemoError as exc:
        raise CommandError(str(exc)) from None
    mdir = MonitorDir(path / DEFAULT_DIRNAME)
    print(f"demo: running `{' '.join(demo.pytest_command(args.workers)[1:])}` in {path}")
    before = set(mdir.logs()) if mdir.runs.is_dir() else set()
    process = demo.start(path, args.workers)
    try:
        if args.headless:
            process.wait()
        else:
            _open_dashboard(LiveSource(mdir, show_last=False))
    finally:
        demo.stop(process)
    if args.headless:
        write(render("text", build_report(load_run(newest_log(mdir), mdir), 10), sections))
    cwd = Path.cwd()
    output = demo.shown_path(mdir.root / demo.OUTPUT_NAME, cwd)
    print(f"demo: pytest output in {output}", file=sys.stderr)
    new = sorted(set(mdir.logs()) - before)
    if new:
        run_id = new[-1].name.removesuffix(".jsonl")
        program = demo.invoked_as(sys.argv[0], cwd, os.environ.get("PATH"))
        print(f"demo: run {run_id}, recorded in {demo.shown_path(mdir.root, cwd)}", file=sys.stderr)
        for what, command in demo.reopen_commands(mdir, run_id, cwd, program):
            print(f"demo: {what:<14} {command}", file=sys.stderr)
    return EXIT_OK


# ------------------------------------------------------------------------ dump


def _dump_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "%(prog)s [-h] [--dir DIR] [RUN] WORKER"  # RUN first, but optional
    parser.add_argument(
        "run", metavar="RUN", help="the live run: its id, a unique prefix, or `latest`"
    )
    parser.add_argument(
        "worker", metavar="WORKER", nargs="?", help="the worker (gw0, gw1..., main without xdist)"
    )
    add_dir_option(parser)


def _dump(args: argparse.Namespace) -> int:
    from .forensics.dump import DumpError, find_live, live_root, request_dump, stall_text

    run, worker = (args.run, args.worker) if args.worker else ("latest", args.run)
    try:
        live = find_live(monitor_dir(args), run)
        stall = request_dump(live, worker)
    except DumpError as exc:
        raise CommandError(str(exc)) from None
    write(stall_text(stall, live_root(live)))
    return EXIT_OK


# ---------------------------------------------------------------------- whatif


def _workers_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma list of worker counts, e.g. 1,2,4,8"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one worker count, e.g. 1,2,4,8")
    return values


def _whatif_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser)
    add_dir_option(parser)
    parser.add_argument(
        "-n",
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="xdist workers to predict the run with (default: as recorded, at least 1)",
    )
    parser.add_argument(
        "--dist",
        choices=DISTS,
        default=None,
        metavar="MODE",
        help="xdist's distribution: load, loadscope, loadfile or worksteal (default: as "
        "recorded, else load)",
    )
    parser.add_argument(
        "--order",
        choices=ORDERS,
        default="collected",
        metavar="ORDER",
        help="collected (pytest's order, as recorded) or longest-first (what "
        "`pytest --monitor-order=history` does: longest first by these durations)",
    )
    parser.add_argument(
        "--table",
        type=_workers_list,
        default=None,
        metavar="N,N,...",
        help="worker counts for the table (default 1,2,4,8,16)",
    )
    parser.add_argument(
        "-f",
        "--format",
        choices=("text", "json"),
        default="text",
        metavar="FORMAT",
        help="text (default) or json (for scripts: the same numbers, in seconds)",
    )
    parser.add_argument(
        "--json", dest="format", action="store_const", const="json", help="--format json"
    )


def _whatif(args: argparse.Namespace) -> int:
    import json

    from .predict.overheads import settled
    from .predict.profile import load_profile
    from .predict.whatif import DEFAULT_TABLE, Question, render_text, whatif
    from .reports.document import printable
    from .reports.logs import resolve_run

    mdir = monitor_dir(args)
    path = resolve_run(mdir, args.run)
    profile = load_profile(path)
    if not profile.tests:
        raise CommandError(f"run {profile.run_id} ran no tests: there is nothing to predict")
    profile = settled(profile, path)
    dist = args.dist or (profile.dist if profile.dist in DISTS else "load")
    question = Question(
        workers=args.workers if args.workers is not None else max(1, profile.workers),
        dist=dist,
        order=args.order,
        table=args.table or DEFAULT_TABLE,
    )
    try:
        answer = whatif(profile, question)
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    if args.format == "json":
        write(json.dumps(answer, indent=2) + "\n")
    else:
        write(printable(render_text(answer)))
    return EXIT_OK


WHATIF_EPILOG = f"""\
The model replays each test's recorded time through xdist's scheduler: session fixtures
paid once per worker (once in all under monitor.run_once), locks held as long as recorded
whatever -n, worker start-up and the gap between tests as measured, start-up slower when
more workers than CPUs start at once. Worker start-up and exit are the median over RUN and
up to 4 older runs of the same suite on this machine in the same folder (one slow start
does not skew the prediction). Tests that compete for CPU beyond that are not
modelled: a CPU-bound suite goes no faster than its CPUs allow.

examples:
  testmon whatif                          the latest run, at its own -n, with a table
  testmon whatif latest -n 8 --order longest-first
  testmon whatif 20261121-2032 --dist worksteal --table 2,3,4,6
  testmon whatif --format json | jq .best

{EXIT_CODES_HELP}"""


# -------------------------------------------------------------------- registry

COMMANDS: tuple[Command, ...] = (
    Command(
        name="tui",
        summary="the dashboard: the live run (or the last recorded one), or a recorded RUN",
        description="Open the dashboard. Without RUN it attaches to the newest live run of "
        "the project (.testmon/live/); with none live it says so, shows the last recorded "
        "run and switches to a new run the moment one starts, so it can be opened before "
        "`pytest -n 8 --monitor`. With RUN it opens that recorded run at its end state, or "
        "plays it from the start with --speed (space play/pause, . step, [ ] seek).",
        arguments=_tui_arguments,
        run=_tui,
        epilog=EXIT_CODES_HELP,
    ),
    Command(
        name="replay",
        summary="open a recorded run in the dashboard (--speed N plays it from the start)",
        description="Open a recorded run in the dashboard: at its end state, or played "
        "from the start at N times real speed with --speed N. Keys: space play/pause, "
        ". and , step, ] and [ seek by 10 s, home to the start.",
        arguments=_replay_arguments,
        run=_replay,
        epilog=EXIT_CODES_HELP,
    ),
    Command(
        name="demo",
        summary="run the bundled demo suite with -n 4 --monitor and watch it live",
        description="Run the bundled demo suite (examples/demo) with `pytest -n 4 --monitor` "
        "in the background and open the dashboard on it: within about half a minute it "
        "shows workers contending on a migration lock, a session fixture set up on every "
        "worker, a straggler, a failure and a stall with its stack. --headless prints the "
        "report instead.",
        arguments=_demo_arguments,
        run=_demo,
        epilog=EXIT_CODES_HELP,
    ),
    Command(
        name="runs",
        summary="list the recorded runs, newest first",
        description="List the recorded runs, newest first: id, start, wall time, workers, "
        "status and outcome counts. Finished runs are summarised from their end record "
        "without reading the whole log.",
        arguments=_runs_arguments,
        run=_runs,
        epilog=_runs_epilog(),
    ),
    Command(
        name="report",
        summary="summarise a run: outcomes, workers, slowest tests, fixtures, failures, stalls",
        description="Summarise one recorded run: pytest's counts, wall time, each worker's "
        "busy share and the parallel efficiency, slowest tests, fixtures by setup time (and "
        "wide-scoped ones set up once per worker), failures, crashes, stalls, lock waits, "
        "migrations and containers when the log has them, and any log lines the reader "
        "had to skip.",
        arguments=_report_arguments,
        run=_report,
        epilog=REPORT_EPILOG,
    ),
    Command(
        name="suspects",
        summary="the tests that ran before TEST on its worker, and how to replay that order",
        description="List the tests that ran before TEST on the same worker process, in "
        "order (with the random seed when an ordering plugin shuffled them), and print a "
        "command that replays exactly that order serially: the usual way to find out why a "
        "test passes alone but fails in the suite.",
        arguments=_suspects_arguments,
        run=_suspects,
        epilog=EXIT_CODES_HELP,
    ),
    Command(
        name="bisect",
        summary="find the test that pollutes TEST by replaying its worker's order",
        description="Replay TEST after its recorded predecessors, confirm it fails there and "
        "passes alone, then bisect the predecessors (keeping their order) down to the test "
        "after which it fails: at most ceil(log2(n)) + 2 serial pytest runs, each shown as "
        "it goes. When the failure does not reproduce, it says so (flaky, not polluted).",
        arguments=_bisect_arguments,
        run=_bisect,
        epilog="arguments after -- go to every pytest run, e.g.\n"
        "  testmon bisect latest test_x -- -c ci.ini --ds=settings.test\n\n" + EXIT_CODES_HELP,
    ),
    Command(
        name="diff",
        summary="compare two runs: time, outcomes that changed, what moved, flaky tests",
        description="Compare run A with run B: wall time and parallel efficiency, tests whose "
        "outcome changed (with what ran before them on their worker in each run), tests and "
        "fixtures whose durations moved most, lock and container costs, and tests that both "
        "passed and failed over the recorded runs (flaky).",
        arguments=_diff_arguments,
        run=_diff,
        epilog=EXIT_CODES_HELP,
    ),
    Command(
        name="whatif",
        summary="predict a recorded run with another -n, --dist or test order",
        description="Replay a recorded run through a model of xdist's scheduling and "
        "predict its wall time, parallel efficiency and tail with -n N, --dist MODE and "
        "--order ORDER; a table over several -n shows where more workers stop paying. It "
        "says what limits the run (the longest test, a lock, session fixtures set up on "
        "every worker, too few tests per worker, start-up) and which -n and order the next "
        "run should take.",
        arguments=_whatif_arguments,
        run=_whatif,
        epilog=WHATIF_EPILOG,
    ),
    Command(
        name="dump",
        summary="print every thread's stack of a live worker now, stalled or not",
        description="Ask a worker of a run in progress for the stacks of all its threads, "
        "with what each thread is blocked on (lock, condition, queue, socket...) and the "
        "pending asyncio tasks of an event loop. A worker whose GIL is held by native code "
        "cannot answer itself: the hub takes its stacks from outside when it runs on this "
        "machine. RUN may be left out (the latest live run).",
        arguments=_dump_arguments,
        run=_dump,
        epilog="examples:\n  testmon dump latest gw3\n  testmon dump gw0\n\n" + EXIT_CODES_HELP,
    ),
    Command(
        name="export",
        summary="write a run as a Perfetto trace or JUnit XML",
        description="Export a recorded run: a Chrome/Perfetto trace (one track per worker "
        "with tests, phases and fixtures; lock waits and container phases on tracks of their "
        "own; stalls and crashes as instant events) that opens in ui.perfetto.dev, or JUnit "
        "XML for CI systems.",
        arguments=_export_arguments,
        run=_export,
        epilog=EXIT_CODES_HELP,
    ),
)


def _wrap(text: str) -> str:
    """Descriptions are prose (wrapped here); epilogs are laid out by hand (kept raw)."""
    return textwrap.fill(text, width=HELP_WIDTH)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_wrap(
            "testmon-live: look at what every pytest(-xdist) worker did. Record a run with "
            "`pytest --monitor` (add `-n 8` for xdist), then use a command below."
        ),
        epilog=f"`{PROG} COMMAND --help` explains each command.\n\n{EXIT_CODES_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"testmon-live {version()} (reads run logs of schema {SCHEMA_VERSION} and older)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for command in COMMANDS:
        child = sub.add_parser(
            command.name,
            help=command.summary,
            description=_wrap(command.description),
            epilog=command.epilog or None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.arguments(child)
        child.set_defaults(handler=command.run)
    return parser


def _fail(prog: str, message: str, code: int) -> int:
    from .reports.document import printable

    print(f"{prog}: error: {printable(message)}", file=sys.stderr)
    return code


def _dispatch(args: argparse.Namespace) -> int:
    prog = f"{PROG} {args.command}"
    try:
        return int(args.handler(args))
    except SchemaTooNew as exc:
        return _fail(prog, str(exc), EXIT_SCHEMA)
    except RunLogError as exc:
        return _fail(prog, str(exc), EXIT_ERROR)
    except CommandError as exc:
        return _fail(prog, str(exc), exc.code)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        return _fail(prog, f"{exc.strerror or exc}{where}", EXIT_ERROR)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    passthrough: list[str] = []
    if "--" in argv:  # what follows `--` goes to pytest (testmon bisect ... -- -c ci.ini)
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)
    args.passthrough = passthrough
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return _dispatch(args)
    except BrokenPipeError:
        # `testmon runs | head`: the reader left; stop quietly, without a second error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    # The last resort for bugs: one line unless the user asks for the traceback.
    except Exception as exc:  # noqa: BLE001
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        message = f"internal error: {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for a traceback)"
        return _fail(f"{PROG} {args.command}", message, EXIT_ERROR)


if __name__ == "__main__":
    sys.exit(main())
