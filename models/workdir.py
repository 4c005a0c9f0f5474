"""What a job writes in its work folder (WORK_ROOT/jobs/<id>/), by name. Torch-free: the
worker, which never imports torch, finds the checkpoint by this name too."""

from __future__ import annotations

CHECKPOINT_NAME = "checkpoint.pt"  # everything needed to resume bit for bit (models.train)
ONNX_NAME = "generator.onnx"  # the exported generator (models.pipeline)
REPORT_DIR = "report"  # the quality report: report.json and plots/*.png
