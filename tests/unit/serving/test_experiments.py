from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from fitpulse_orchestration.serving.experiments import (
    Assignment,
    Experiment,
    Variant,
    load_experiment,
)

USERS = [f"usr_{i:07d}" for i in range(10_000)]

EXAMPLE = """
[experiment]
name = "ranker-ab"
salt = "2026-11-ranker-ab"

[[experiment.variants]]
name = "control"
share = 0.5
model_alias = "champion"

[[experiment.variants]]
name = "treatment"
share = 0.5
model_alias = "challenger"
rerank = { max_per_category = 4, fresh_slot = 2 }
"""


def _ab(salt: str = "salt-1", shares: tuple[float, ...] = (0.5, 0.5)) -> Experiment:
    variants = tuple(Variant(f"v{i}", share) for i, share in enumerate(shares))
    return Experiment("ab", salt, variants)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "experiment.toml"
    path.write_text(text)
    return path


def test_assignment_is_a_pure_function_of_salt_and_user() -> None:
    first, second = _ab(), _ab()

    assert [first.assign(u) for u in USERS[:500]] == [second.assign(u) for u in USERS[:500]]
    assert all(0.0 <= first.bucket(u) < 1.0 for u in USERS[:500])


def test_a_new_salt_reshuffles_about_half_of_the_users() -> None:
    old, new = _ab("salt-1"), _ab("salt-2")

    moved = sum(old.assign(u).variant != new.assign(u).variant for u in USERS)

    # Independent 50/50 draws disagree for half the users: Binomial(10000, 0.5), sd 50.
    assert 4_800 <= moved <= 5_200


def test_shares_split_the_traffic() -> None:
    experiment = _ab(shares=(0.2, 0.3, 0.5))

    counts = Counter(experiment.assign(u).variant for u in USERS)

    # Binomial(10000, p) within 4.5 sd.
    for name, share in (("v0", 0.2), ("v1", 0.3), ("v2", 0.5)):
        sd = (len(USERS) * share * (1 - share)) ** 0.5
        assert abs(counts[name] - len(USERS) * share) <= 4.5 * sd, counts


def test_a_single_variant_takes_everyone() -> None:
    experiment = _ab(shares=(1.0,))

    assert {experiment.assign(u).variant for u in USERS[:1000]} == {"v0"}


def test_example_file_loads_with_its_overrides(tmp_path: Path) -> None:
    experiment = load_experiment(_write(tmp_path, EXAMPLE))

    assert experiment.name == "ranker-ab"
    assert experiment.salt == "2026-11-ranker-ab"
    assert [v.name for v in experiment.variants] == ["control", "treatment"]
    assert experiment.variants[0].rerank == ()
    assert experiment.variants[1].rerank == (("fresh_slot", 2), ("max_per_category", 4))
    treated = next(u for u in USERS if experiment.assign(u).variant == "treatment")
    assert experiment.assign(treated) == Assignment(
        "ranker-ab", "treatment", "challenger", (("fresh_slot", 2), ("max_per_category", 4))
    )
    control = next(u for u in USERS if experiment.assign(u).variant == "control")
    assert experiment.assign(control) == Assignment("ranker-ab", "control", "champion", ())


def test_model_alias_defaults_to_champion(tmp_path: Path) -> None:
    text = EXAMPLE.replace('model_alias = "challenger"\n', "")

    experiment = load_experiment(_write(tmp_path, text))

    assert experiment.variants[1].model_alias == "champion"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("share = 0.5\nmodel_alias", "share = 0.4\nmodel_alias", "variant shares sum to 0.9"),
        ("max_per_category = 4", "max_per_category = 4, per_page = 3", r"unknown rerank.*per_page"),
        ("fresh_slot = 2", "n = 10", r"unknown rerank settings \['n'\]"),
        ('"challenger"', '"staging"', "model_alias must be one of .*'staging'"),
        ('name = "treatment"', 'name = "control"', "repeats a variant name"),
        ("share = 0.5\nmodel_alias", "share = 0.0\nmodel_alias", r"share must be in \(0, 1\]"),
        ('salt = "2026-11-ranker-ab"', "", "needs a name and a salt"),
        ('name = "ranker-ab"', "", "needs a name and a salt"),
        (
            "share = 0.5\nmodel_alias",
            "weight = 0.5\nmodel_alias",
            r"unknown variant keys \['weight'\]",
        ),
        ('name = "treatment"\n', "", "every variant needs a name and a share"),
        ("share = 0.5\nmodel_alias", "share = \nmodel_alias", "cannot read experiment file"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    assert old in EXAMPLE
    path = _write(tmp_path, EXAMPLE.replace(old, new, 1))

    with pytest.raises(ValueError, match=message) as raised:
        load_experiment(path)

    assert str(path) in str(raised.value)


@pytest.mark.parametrize("text", ['title = "no experiment"\n', "experiment = 3\n"])
def test_a_file_without_an_experiment_table_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValueError, match=r"expected an \[experiment\] table"):
        load_experiment(_write(tmp_path, text))


def test_a_file_without_variants_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, '[experiment]\nname = "x"\nsalt = "y"\n')

    with pytest.raises(ValueError, match="has no variants"):
        load_experiment(path)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read experiment file"):
        load_experiment(tmp_path / "absent.toml")


def test_shares_that_do_not_sum_to_one_are_refused() -> None:
    with pytest.raises(ValueError, match=r"sum to 1\.1"):
        _ab(shares=(0.6, 0.5))
