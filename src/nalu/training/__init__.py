"""Training: the LightningModule that trains one network or a population of them
(``ArithmeticModule``), its optimizer and schedules, the restart rules, the console's progress
and Ctrl-C handling, and the same step written by hand (the speed yardstick)."""
