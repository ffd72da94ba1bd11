"""The commands: ``nalu-train`` (``train``), ``nalu-evaluate``, ``nalu-report``, ``nalu-bench``
and the NALM benchmark, with what they share (``common``: exit codes, one-line errors, the config
folder)."""
