"""Run tags shared by the jobs."""

STAGE_TAG = "fitpulse/stage"
"""Run tag the production run queue limits by (``deploy/dagster.yaml``)."""

# What a registry run acts on: set by the registry jobs' ops on their own run, and by the
# promotion sensor on the runs it requests (the Runs page filters by them).
MODEL_TAG = "fitpulse/model"
VERSION_TAG = "fitpulse/version"
DECISION_TAG = "fitpulse/decision"
REVIEWER_TAG = "fitpulse/reviewer"
ACTOR_TAG = "fitpulse/actor"
OPERATOR_TAG = "fitpulse/operator"
RESTORED_VERSION_TAG = "fitpulse/restored_version"
