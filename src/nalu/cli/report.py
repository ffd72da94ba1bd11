"""``nalu-report DIR [DIR ...]``: the report of every run below the folders, written into the
first (what it holds: ``nalu.results.report``)."""

from pathlib import Path

from nalu.cli.common import (
    EXIT_CONFIG_ERROR,
    EXIT_OUTPUT_ERROR,
    OneLineParser,
    fail,
    output_error_message,
)
from nalu.results import report as reports
from nalu.results.record import REPORT_TABLE
from nalu.results.report import (
    CONSOLE_HIDDEN,
    ReportError,
    console_table,
    group_runs,
    markdown_table,
    median_table,
    write_report,
)

EXAMPLES = """Examples:
  nalu-report outputs/multirun/2026-01-01_12-00-00
  nalu-report outputs/solve/2026-01-01_12-00-00 --group-by model
  nalu-report outputs/multirun/a outputs/multirun/b   # one report of both, written into the first
"""


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(
        prog="nalu-report", description=reports.__doc__, epilog=EXAMPLES, error_type=ReportError
    )
    parser.add_argument("paths", nargs="+", type=Path, help="run or multirun folders")
    parser.add_argument(
        "--group-by",
        default=None,
        help="comma-separated labels or config fields that name a row (default: model and "
        "every field the sweep varied, e.g. optimizer.lr)",
    )
    args = parser.parse_args(argv)
    try:
        report = write_report(args.paths, args.group_by.split(",") if args.group_by else None)
    except ReportError as error:
        fail(error, str(error), EXIT_CONFIG_ERROR)
    except OSError as error:
        fail(error, output_error_message(error), EXIT_OUTPUT_ERROR)
    rates = markdown_table(report.rows, report.group_by)
    print(console_table(rates, text_columns=2, hidden=CONSOLE_HIDDEN))
    print(
        "\nFinal metrics (each run at its best interpolation epoch), median over the runs that"
        " finished:\n"
    )
    print(console_table(median_table(group_runs(report.runs, report.group_by), report.group_by)))
    drawn = len(report.figures)
    figures = f"{drawn} figure{'' if drawn == 1 else 's'}"
    if not drawn:
        figures = "no figures (too many rows)"
    print(f"\nReport: {report.path} (every column; {REPORT_TABLE} and {figures} beside it)")


if __name__ == "__main__":
    main()
