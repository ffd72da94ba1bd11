"""Training: the LightningModule that trains one network or a population of them
(``ArithmeticModule``) and where a population's member dimension lives (``Members``), its
optimizer and schedules, the restart rules, the console's progress, Ctrl-C and SIGTERM handling,
and the same step written by hand (the speed yardstick)."""
