"""``python -m nalu.report``: nalu-report, whose code is ``nalu.cli.report``."""

from nalu.cli.report import main

if __name__ == "__main__":
    main()
