"""``python -m nalu.nalm_benchmark``: make benchmark, whose code is ``nalu.cli.nalm_benchmark``."""

from nalu.cli.nalm_benchmark import main

if __name__ == "__main__":
    main()
