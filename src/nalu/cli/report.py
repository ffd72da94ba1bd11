"""Reports over many runs: ``nalu-report DIR [DIR ...]`` reads every metrics.json
below and writes report.md, report.csv and PNG figures into the first DIR.

Per model (or any ``--group-by`` labels) and operation, two success rates with their 95%
Wilson intervals (Madsen & Johansen 2020, sec. 4.1): per output (outputs × seeds), each output
judged at its own best interpolation epoch as Madsen & Johansen judge their one-output models,
and per run (a run succeeds on an operation when every output of it is solved at the run's best
epoch); the median extrapolation MSE, relative error and normalised error (Trask et al. 2018,
Table 1), the exact-recovery rate and the diverged runs; figures of the loss curves (median over
seeds with the interquartile band) and of the success rates.
"""

import argparse
from pathlib import Path
from typing import NoReturn

from nalu.cli.common import EXIT_CONFIG_ERROR, EXIT_OUTPUT_ERROR, fail, output_error_message
from nalu.results.report import (
    CONSOLE_HIDDEN,
    ReportError,
    console_table,
    group_runs,
    markdown_table,
    median_table,
    write_report,
)


class _OneLineParser(argparse.ArgumentParser):
    """Bad arguments as one line (argparse prints the usage too), with the same exit code as
    any other bad input."""

    def error(self, message: str) -> NoReturn:
        fail(ReportError(message), f"{message} (see nalu-report --help)", EXIT_CONFIG_ERROR)


def main(argv: list[str] | None = None) -> None:
    parser = _OneLineParser(prog="nalu-report", description=__doc__)
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
    print("\nFinal metrics, median over the runs that finished:\n")
    print(console_table(median_table(group_runs(report.runs, report.group_by), report.group_by)))
    print(f"\nReport: {report.path} (every column, report.csv and the figures beside it)")


if __name__ == "__main__":
    main()
