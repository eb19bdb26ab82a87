"""Online experiments: per-variant outcomes of served feeds, from the ingested exposure log."""

import dagster as dg
import pandas as pd

from assets.config import ExperimentAnalysisConfig
from assets.groups import EXPERIMENTS
from assets.resources import ObjectStoreResource
from fitpulse_orchestration.evaluation.experiments import analyze_experiment
from fitpulse_orchestration.evaluation.home_feed import format_markdown
from fitpulse_orchestration.events.ingest import read_clean_events


@dg.asset(group_name=EXPERIMENTS, deps=["raw_events"], kinds={"pandas"})
def experiment_analysis(
    config: ExperimentAnalysisConfig, object_store: ObjectStoreResource
) -> dg.Output[pd.DataFrame]:
    """Per-variant CTR, workout starts per user and 7-day return of one experiment, with CIs."""
    events = read_clean_events(object_store.get_store())
    analysis = analyze_experiment(
        events,
        config.experiment,
        config.control,
        horizon_days=config.horizon_days,
        n_boot=config.n_boot,
    )
    table = analysis.table
    return dg.Output(
        table,
        metadata={
            "experiment": config.experiment,
            "control": config.control,
            "users": int(table["users"].sum()),
            "summary": dg.MetadataValue.json(analysis.summary()),
            "readable": dg.MetadataValue.md(format_markdown(analysis.readable())),
        },
    )
