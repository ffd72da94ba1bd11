"""Configuration, torch-free: the rules of every user-facing field (``rules``), the check of a
whole config or command line before anything is built (``validation``), a command line's
overrides as Hydra reads them (``overrides``), value ranges, the configs' resolvers and the
errors that explain bad input."""
