"""The evaluation report, the benchmark table and the leaderboard submission."""

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
import polars as pl

from acs_pipeline.cohort.tables import CLASSICAL_FLAGS
from acs_pipeline.defs.common import COHORT, EAGER, HOLDOUT_MANIFEST, model_key
from acs_pipeline.defs.models.assets import MODELS, PREDICTIONS, read_result
from acs_pipeline.defs.released.assets import released_scores
from acs_pipeline.defs.resources import PipelineSettings, StorageResource
from acs_pipeline.defs.seeds import current_sweeps
from acs_pipeline.evaluation import submission
from acs_pipeline.io import frames
from acs_pipeline.io.storage import Storage

if TYPE_CHECKING:
    from acs_pipeline.evaluation.inputs import EvaluationInput

REPORT = "reports/evaluation_report.html"
TABLE = "reports/benchmark_table"
BASELINE = "logistic_baseline"


def _validation_predictions(st: Storage, name: str) -> pl.DataFrame:
    rel = PREDICTIONS.format(model=name, name="validation")
    if not st.exists(rel):
        raise dg.Failure(f"{name}_validation_predictions has no file at {st.uri(rel)}")
    return frames.read_csv(st, rel, schema_overrides={"ecg_id": pl.String})


def evaluation_input(st: Storage, settings: PipelineSettings) -> tuple["EvaluationInput", dict]:
    """The tested cohort's validation split, every model's scores on it, flags and subgroups.

    The evaluation set is the validation ECGs that every model scored; ECGs that no model could
    score (their waveform was quarantined) are counted and named in the metadata. A model that
    misses ECGs that others scored is an error raised by :func:`evaluate.evaluate`. The seed
    sweeps come with it when their default run is the current ACS checkpoint
    (:func:`acs_pipeline.defs.seeds.current_sweeps`); the others are left out, saying why.
    """
    from acs_pipeline.evaluation.inputs import EvaluationInput, ModelScores

    val = frames.read_parquet(st, COHORT).filter(
        (pl.col("cohort") == "tested") & (pl.col("split") == "validation")).sort("ecg_id")
    preds = {m: _validation_predictions(st, m) for m in (*MODELS, BASELINE)}
    scored = set.union(*(set(p["ecg_id"].to_list()) for p in preds.values()))
    unscored = val.filter(~pl.col("ecg_id").is_in(list(scored)))
    ev = val.filter(pl.col("ecg_id").is_in(list(scored)))
    scores, weights = [], {}
    for m in MODELS:
        res = read_result(st, m, "acs")
        weights[m] = res.weights_sha256
        scores.append(ModelScores(
            name=m, validation=preds[m]["prediction"].to_numpy(), kind="model",
            ecg_ids=preds[m]["ecg_id"].to_list(),
            lineage=f"{res.checkpoint_uri} (weights sha256 {res.weights_sha256[:12]}, "
                    f"run {res.work_key}, profile {res.profile}, selection {res.selection})"))
    released = released_scores(st, settings)  # "<model> (released)" rows, when imported
    scores.extend(released)
    b = preds[BASELINE]
    scores.append(ModelScores(
        name=BASELINE, validation=b["prediction"].to_numpy(), kind="baseline",
        ecg_ids=b["ecg_id"].to_list(),
        lineage=st.uri(PREDICTIONS.format(model=BASELINE, name="validation"))))
    oracle = None
    if settings.truth_uri and Path(settings.truth_uri).exists():
        truth = pl.read_csv(settings.truth_uri, schema_overrides={"ecg_id": pl.String})
        o = ev.select("ecg_id").join(truth.select("ecg_id", "oracle_risk"), on="ecg_id",
                                     how="left")
        if o["oracle_risk"].null_count() == 0:
            oracle = ModelScores(
                name="oracle", validation=o["oracle_risk"].to_numpy(), kind="oracle",
                ecg_ids=o["ecg_id"].to_list(),
                lineage=f"{settings.truth_uri} (synthetic latent risk: the best reachable score)")
            scores.append(oracle)
    version = hashlib.sha256(st.read_bytes(COHORT)).hexdigest()[:16]
    sweeps, left_out = current_sweeps(st, weights)
    inp = EvaluationInput(
        ecg_ids=ev["ecg_id"].to_list(), y=ev["acs"].to_numpy().astype(int), scores=scores,
        flags={f: ev[f].cast(pl.Int8).to_numpy() for f in CLASSICAL_FLAGS},
        sex=ev["sex"].to_numpy(), race=ev["race"].to_numpy(),
        age=ev["age"].cast(pl.Float64).to_numpy(), data_version=f"cohort {version}",
        title=f"ACS-BenchWork evaluation ({settings.profile} profile)", profile=settings.profile,
        sweeps=sweeps, sweeps_left_out=left_out)
    extra = {"validation_ecgs": len(val), "evaluated_ecgs": len(ev),
             "unscored_ecgs": len(unscored),
             "unscored_examples": unscored["ecg_id"].head(10).to_list(),
             "has_oracle": oracle is not None,
             "released_models": [s.name for s in released],
             "seed_sweeps": [s.model for s in sweeps], "seed_sweeps_left_out": left_out}
    return inp, extra


@dg.multi_asset(
    specs=[
        dg.AssetSpec("evaluation_report", group_name="evaluation", kinds={"html"},
                     code_version="3", automation_condition=EAGER,
                     deps=["cohort", *[model_key(m, "validation_predictions") for m in MODELS],
                           model_key(BASELINE, "validation_predictions"),
                           *[model_key(m, "seed_sweep") for m in MODELS]],
                     description="Self-contained HTML report: the models' table (a smoke run "
                                 "marked as such), ROC, PR, calibration, decision curves, "
                                 "subgroups, the seed sweeps of the current checkpoints, the "
                                 "paper's figures apart, lineage."),
        dg.AssetSpec("benchmark_table", group_name="evaluation", kinds={"parquet", "csv"},
                     code_version="2", automation_condition=EAGER, deps=["evaluation_report"],
                     description="One row per (model, metric, kind), kind one of model / "
                                 "baseline / flag / oracle / reference (the paper's figures), "
                                 "for comparing runs."),
    ],
)
def evaluation_report(context: dg.AssetExecutionContext, storage: StorageResource,
                      settings: PipelineSettings):
    from acs_pipeline.evaluation.evaluate import evaluate
    from acs_pipeline.evaluation.report import render_html

    st = storage.get()
    inp, extra = evaluation_input(st, settings)
    result = evaluate(inp, n_boot=2000, seed=settings.seed)
    html = render_html(inp, result).encode()
    uri = st.write_bytes(REPORT, html)
    context.log.info(f"evaluation report written to {uri}")
    yield dg.MaterializeResult(
        asset_key="evaluation_report",
        metadata={"uri": dg.MetadataValue.path(uri), "bytes": len(html),
                  "summary": dg.MetadataValue.md(result.markdown),
                  **{k: dg.MetadataValue.json(v) if isinstance(v, list | dict) else v
                     for k, v in extra.items()}},
        data_version=dg.DataVersion(hashlib.sha256(html).hexdigest()[:16]))
    table = result.table
    pq = frames.write_parquet(st, f"{TABLE}.parquet", table)
    frames.write_csv(st, f"{TABLE}.csv", table)
    yield dg.MaterializeResult(
        asset_key="benchmark_table",
        metadata={"uri": dg.MetadataValue.path(pq.uri), "dagster/row_count": pq.rows,
                  "csv_uri": dg.MetadataValue.path(st.uri(f"{TABLE}.csv"))},
        data_version=dg.DataVersion(pq.version))


def _holdout_ids(st: Storage) -> list[str]:
    man = frames.read_parquet(st, HOLDOUT_MANIFEST)
    return sorted(man.filter(pl.col("ecg_id").is_not_null())["ecg_id"].to_list())


@dg.asset(group_name="evaluation", kinds={"csv"}, code_version="1",
          deps=["holdout_manifest", "cohort",
                *[model_key(m, "holdout_predictions") for m in MODELS]],
          automation_condition=EAGER,
          description="Leaderboard CSVs, one per task (ACS, MACE) and model, validated before "
                      "they are written.")
def leaderboard_submission(context: dg.AssetExecutionContext, storage: StorageResource,
                           settings: PipelineSettings) -> dg.MaterializeResult:
    st = storage.get()
    holdout = _holdout_ids(st)
    co = frames.read_parquet(st, COHORT)
    prior = {"acs": float(co.filter(pl.col("cohort") == "tested")["acs"].mean()),
             "mace": float(co.filter(pl.col("cohort") == "untested")["mace"].mean())}
    files, imputed = {}, {}
    digest = hashlib.sha256()
    for m in MODELS:
        p = frames.read_csv(st, PREDICTIONS.format(model=m, name="holdout"),
                            schema_overrides={"ecg_id": pl.String})
        missing = sorted(set(holdout) - set(p["ecg_id"].to_list()))
        for task in submission.TASKS:
            ids = p["ecg_id"].to_list() + missing
            pred = np.concatenate([p[task].to_numpy(), np.full(len(missing), prior[task])])
            data = submission.build_submission(
                holdout, ids, pred, id_column=settings.id_column,
                prediction_column=settings.prediction_column)
            rel = submission.submission_key(task, m)
            files[f"{task}/{m}"] = st.write_bytes(rel, data)
            digest.update(data)
        imputed[m] = len(missing)
    if any(imputed.values()):
        context.log.warning(f"holdout ECGs without a tensor got the cohort prior: {imputed}")
    return dg.MaterializeResult(
        metadata={"files": dg.MetadataValue.json(files), "holdout_ecgs": len(holdout),
                  "imputed_with_prior": dg.MetadataValue.json(imputed),
                  "columns": f"{settings.id_column},{settings.prediction_column}"},
        data_version=dg.DataVersion(digest.hexdigest()[:16]))


@dg.asset_check(asset=leaderboard_submission, blocking=True,
                description="Every file: each holdout id exactly once, probabilities in [0, 1].")
def submission_files_valid(storage: StorageResource,
                           settings: PipelineSettings) -> dg.AssetCheckResult:
    st = storage.get()
    holdout = _holdout_ids(st)
    problems = {}
    for m in MODELS:
        for task in submission.TASKS:
            data = st.read_bytes(submission.submission_key(task, m))
            try:
                submission.check_submission_csv(
                    holdout, data, id_column=settings.id_column,
                    prediction_column=settings.prediction_column)
            except submission.SubmissionError as exc:
                problems[f"{task}/{m}"] = str(exc)
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={"problems": problems, "files": len(submission.TASKS) * len(MODELS)})
