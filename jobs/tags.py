"""Run tags shared by the jobs."""

STAGE_TAG = "fitpulse/stage"
"""Run tag the production run queue limits by (``deploy/dagster.yaml``)."""
