"""A guarded canary rollout driven through the closed loop, and challengers that misbehave.

One population lives with the feed service while a ``RolloutController`` moves users from the
champion to the challenger: every ``days_per_step`` simulated days the controller reviews the
step from that window's exposures (requests by variant) and push log (who switched
notifications off), then the service's traffic split follows the new state. A kill switch can
be pulled at any simulated day. Rehearsing a rollback before a real launch needs a challenger
known to be bad: ``missing_feature_challenger`` is one whose ranker expects a feature serving
does not provide (a training-serving mismatch), so every canary request falls back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd

from fitpulse_orchestration.serving.feed_state import LoadedModel
from fitpulse_orchestration.serving.rollout import (
    CANARY,
    RolloutConfig,
    RolloutController,
    StepReview,
    arm_metrics,
)
from fitpulse_orchestration.simulation.ab import Environment, split_users
from fitpulse_orchestration.simulation.arms import Arm, ServiceFeed, ServicePush, sibling_service
from fitpulse_orchestration.simulation.closed_loop import ArmRun, Population


def missing_feature_challenger(
    champion: LoadedModel, version: str, feature: str = "x_not_served"
) -> LoadedModel:
    """The champion's model served by a ranker that also wants ``feature``, which serving lacks.

    The challenger scores with that ranker even when the champion serves the ranker-free blend,
    so its failure is the one rehearsed.
    """
    if champion.model is None:
        raise ValueError("the champion is not loaded")
    ranker = champion.model.ranker
    broken = replace(ranker, feature_names=[*ranker.feature_names, feature])
    model = replace(champion.model, ranker=broken, scorer="ranker")
    return LoadedModel(version, model, None, champion.pools)


@dataclass
class RolloutRun:
    """A simulated rollout: the loop's run, each review, and the final state."""

    run: ArmRun
    reviews: list[tuple[int, StepReview]]
    killed_on_day: int | None
    status: str
    share: float


def simulate_rollout(
    env: Environment,
    controller: RolloutController,
    config: RolloutConfig,
    challenger: LoadedModel,
    users: int,
    days: int,
    days_per_step: int,
    seed: int,
    actor: str,
    kill_on_day: int | None = None,
) -> RolloutRun:
    """Run one rollout of ``challenger`` over ``days`` simulated days.

    Args:
        env: the prepared environment (``simulation.ab.prepare_simulation``).
        controller: where the rollout's state and audit go.
        config: steps and guardrails.
        challenger: the model the ``challenger`` alias serves.
        users: how many weekly-active users live through the rollout.
        days: simulated days (the rollout may end, be halted or be killed before).
        days_per_step: days of exposures each review reads.
        seed: seed of the users' draws and of the sample.
        actor: who started the rollout (and pulls the kill switch).
        kill_on_day: pull the kill switch at the end of that day (None: never).
    """
    models = {"champion": env.service.state.models["champion"], "challenger": challenger}
    state = controller.start(config, actor, now=env.loop.start.to_pydatetime())
    service = sibling_service(env.service, models, state.experiment())
    arm = Arm("rollout", ServiceFeed(service), ServicePush(env.push))
    (sample,) = split_users(env.weekly_active, 1, users, seed)
    population = Population.of(env.latent, sample, env.pseudonymizer)
    reviews: list[tuple[int, StepReview]] = []
    killed: list[int] = []
    control_baseline = None

    def on_day_end(day: int, requests: pd.DataFrame, push_log: pd.DataFrame) -> None:
        nonlocal control_baseline
        current = controller.state(config.name)
        if current.status != "running":
            return
        day_end = (env.loop.start + pd.Timedelta(days=day + 1)).to_pydatetime()
        if kill_on_day is not None and day == kill_on_day:
            current = controller.kill(config.name, actor, f"kill switch on simulated day {day}")
            service.experiment = current.experiment()
            killed.append(day)
            return
        if (day + 1) % days_per_step:
            return
        window = requests[requests["day"] > day - days_per_step]
        pushes = push_log[push_log["day"] > day - days_per_step]
        disabled = set(pushes.loc[pushes["disabled"], "user"])
        canary = arm_metrics(window[window["variant"] == CANARY], disabled)
        control_rows = window[window["variant"] != CANARY]
        if len(control_rows):
            control_baseline = arm_metrics(control_rows, disabled)
        if control_baseline is None:
            raise ValueError("a rollout needs a control window before its first full step")
        review = controller.review(config.name, control_baseline, canary, now=day_end)
        reviews.append((day, review))
        service.experiment = controller.state(config.name).experiment()

    run = env.loop.run(arm, population, days, seed, on_day_end)
    final = controller.state(config.name)
    return RolloutRun(run, reviews, killed[0] if killed else None, final.status, final.share)
