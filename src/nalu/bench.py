"""``python -m nalu.bench``: nalu-bench, whose code is ``nalu.cli.bench``."""

from nalu.cli.bench import main

if __name__ == "__main__":
    main()
