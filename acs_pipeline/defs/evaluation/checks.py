"""Checks on the leaderboard submission beyond its files' format: holdout ECGs whose prediction
was imputed with the cohort prior (no tensor: quarantined at ingest, or no holdout prediction)."""

import dagster as dg

SUBMISSION = dg.AssetKey("leaderboard_submission")


@dg.asset_check(asset=SUBMISSION, name="no_holdout_prediction_imputed", blocking=False,
                description="Warns when holdout ECGs got the cohort prior instead of a model's "
                "prediction (the count per model, from the submission's `imputed_with_prior`).")
def no_holdout_prediction_imputed(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    event = context.instance.get_latest_materialization_event(SUBMISSION)
    if event is None or event.asset_materialization is None:
        return dg.AssetCheckResult(passed=False, description="leaderboard_submission has not "
                                   "been materialized")
    metadata = event.asset_materialization.metadata
    if "imputed_with_prior" not in metadata:
        return dg.AssetCheckResult(passed=False, description="leaderboard_submission recorded "
                                   "no `imputed_with_prior` metadata: imputation unknown")
    imputed: dict[str, int] = metadata["imputed_with_prior"].value
    holdout = metadata["holdout_ecgs"].value if "holdout_ecgs" in metadata else None
    total = sum(imputed.values())
    worst = max(imputed.values(), default=0)
    models = sorted(m for m, n in imputed.items() if n)
    description = (f"no holdout prediction imputed ({holdout} holdout ECGs)" if not total else
                   f"{worst} of {holdout} holdout ECGs got the cohort prior instead of a "
                   f"prediction (models: {', '.join(models)})")
    return dg.AssetCheckResult(
        passed=total == 0, severity=dg.AssetCheckSeverity.WARN, description=description,
        metadata={"imputed_with_prior": dg.MetadataValue.json(imputed),
                  "imputed_max_per_model": worst, "holdout_ecgs": holdout or 0})
