"""``python -m nalu.evaluate``: nalu-evaluate, whose code is ``nalu.cli.evaluate``."""

from nalu.cli.evaluate import main

if __name__ == "__main__":
    main()
