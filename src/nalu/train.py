"""``python -m nalu.train``: nalu-train, whose code is ``nalu.cli.train``."""

from nalu.cli.train import main

if __name__ == "__main__":
    main()
