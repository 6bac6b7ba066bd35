"""The submission's imputed holdout predictions show in a check, not only in a log."""

import dagster as dg
import polars as pl
import pytest

from acs_pipeline.defs.common import COHORT, HOLDOUT_MANIFEST
from acs_pipeline.defs.evaluation.assets import leaderboard_submission
from acs_pipeline.defs.evaluation.checks import no_holdout_prediction_imputed
from acs_pipeline.defs.models.assets import MODELS, PREDICTIONS
from acs_pipeline.defs.resources import resources_from_env
from acs_pipeline.io import frames
from acs_pipeline.io.storage import Storage

HOLDOUT = [f"ecg{i:010x}" for i in range(6)]


def _inputs(st: Storage, missing: dict[str, int]) -> None:
    frames.write_parquet(st, HOLDOUT_MANIFEST, pl.DataFrame({"ecg_id": [*HOLDOUT, None]}))
    frames.write_parquet(st, COHORT, pl.DataFrame({
        "cohort": ["tested", "tested", "untested", "untested"],
        "acs": [1, 0, 0, 0], "mace": [0, 1, 1, 0]}))
    for m in MODELS:
        ids = HOLDOUT[missing.get(m, 0):]
        frames.write_csv(st, PREDICTIONS.format(model=m, name="holdout"), pl.DataFrame(
            {"ecg_id": ids, "acs": [0.2] * len(ids), "mace": [0.3] * len(ids)}))


@pytest.mark.parametrize("missing", [{}, {MODELS[0]: 2, MODELS[-1]: 1}])
def test_imputed_holdout_predictions_fail_a_warning_check(tmp_path, missing) -> None:
    st = Storage(str(tmp_path / "storage"))
    _inputs(st, missing)
    result = dg.materialize(
        [leaderboard_submission, no_holdout_prediction_imputed],
        resources=resources_from_env({"ACS_STORAGE_URI": st.root}))
    assert result.success  # a warning: the submission is still written
    [check] = result.get_asset_check_evaluations()
    assert check.passed == (not missing)
    assert check.severity == dg.AssetCheckSeverity.WARN
    imputed = check.metadata["imputed_with_prior"].value
    assert imputed == {m: missing.get(m, 0) for m in MODELS}
    assert check.metadata["imputed_max_per_model"].value == max(missing.values(), default=0)
    if missing:
        assert check.description.startswith(f"2 of {len(HOLDOUT)} holdout ECGs")
        assert MODELS[0] in check.description and MODELS[-1] in check.description

