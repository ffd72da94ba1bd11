"""What a run leaves behind: the metric names and records (``record``), the metrics themselves,
the recorder that writes them with checkpoints and TensorBoard (``recorder``), weights read
back as formulas, heatmaps, and the reports across runs with the published numbers beside."""
