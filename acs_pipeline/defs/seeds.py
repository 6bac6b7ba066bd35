"""Seed sweeps: how much a model's validation AUROC moves with the seed.

``<model>_seed_sweep`` trains the model again (MACE, then ACS) once per extra training seed
(``ACS_SEEDS``; the cohort's splits fixed) and once per split seed (``ACS_SPLIT_SEEDS``; the
splits redrawn with ``cohort.build.assign_splits``, the training seed fixed at ``ACS_SEED``),
scores each run on its own validation split and writes every run and a summary per kind (mean,
sample standard deviation, min, max; the default run counts in both; a run whose splits have too
few cases to train is a row with its ``error``, counted as failed) under the storage root:
:data:`RUNS` and :data:`SUMMARY`. The default run is the graph's own ``<model>_acs_checkpoint``
(seed ``ACS_SEED``, the cohort's splits): it is not retrained, and it alone is the leaderboard
submission. With no extra seeds, or a model not in ``ACS_SWEEP_MODELS``, the asset is skipped.
"""

import dagster as dg
import polars as pl

from acs_pipeline.cohort.build import assign_splits
from acs_pipeline.defs.common import COHORT, EAGER, md_table, model_key
from acs_pipeline.defs.models.assets import (
    MODELS,
    PREDICTIONS,
    read_result,
    train_run,
    training_version,
    validation_scores,
)
from acs_pipeline.defs.resources import PipelineSettings, StorageResource, loaded_settings
from acs_pipeline.io import frames
from acs_pipeline.io.storage import Storage
from acs_pipeline.models.specs import model_spec

RUNS = "reports/seed_sweep/{model}_runs.csv"
SUMMARY = "reports/seed_sweep/{model}_summary.csv"
KINDS = ("training_seed", "split_seed")


def summarize(runs: pl.DataFrame) -> pl.DataFrame:
    """Per kind of sweep: its runs and the default run (``kind == 'default'``), their number,
    mean, sample standard deviation (null for one run), min and max validation AUROC; runs that
    could not train (a null AUROC, their ``error`` says why) are counted in ``failed``."""
    default = runs.filter(pl.col("kind") == "default")
    parts = []
    for kind in KINDS:
        rows = pl.concat([default, runs.filter(pl.col("kind") == kind)])
        if len(rows) == len(default):
            continue
        a = rows["validation_auroc"].drop_nulls()
        parts.append(pl.DataFrame({
            "kind": [kind], "runs": [len(a)], "failed": [len(rows) - len(a)],
            "mean_auroc": [a.mean()], "sd_auroc": [a.std()], "min_auroc": [a.min()],
            "max_auroc": [a.max()]}))
    return pl.concat(parts) if parts else pl.DataFrame()


def _row(kind: str, seed: int, split_seed: int, res, scores: pl.DataFrame | None,
         error: str | None = None) -> dict:
    from acs_pipeline.evaluation.ranking import auroc

    row = {"kind": kind, "training_seed": seed, "split_seed": split_seed,
           "validation_ecgs": None, "validation_positives": None, "validation_auroc": None,
           "selecting_auroc": None, "selection": None, "weights_sha256": None,
           "checkpoint": None, "submission": kind == "default", "error": error}
    if res is not None and scores is not None:
        y, p = scores["acs"].to_numpy(), scores["prediction"].to_numpy()
        row |= {"validation_ecgs": len(scores), "validation_positives": int(y.sum()),
                "validation_auroc": float(auroc(y, p)), "selecting_auroc": res.best_val_auroc,
                "selection": res.selection, "weights_sha256": res.weights_sha256,
                "checkpoint": res.checkpoint_uri}
    return row


def sweep(context: dg.AssetExecutionContext, model: str, st: Storage,
          settings: PipelineSettings) -> pl.DataFrame:
    """Every run of ``model``'s sweep, the default run first (see the module docstring)."""
    from acs_pipeline.training.data import InsufficientLabelsError  # torch: only when run

    cohort = frames.read_parquet(st, COHORT)
    default = read_result(st, model, "acs")
    scores = pl.read_csv(st.read_bytes(PREDICTIONS.format(model=model, name="validation")),
                         schema_overrides={"ecg_id": pl.String})
    rows = [_row("default", settings.seed, settings.seed, default, scores)]
    key = context.run.root_run_id or context.run.run_id
    todo = [("training_seed", s, settings.seed) for s in settings.seeds if s != settings.seed]
    todo += [("split_seed", settings.seed, k) for k in settings.split_seeds if k != settings.seed]
    for kind, seed, split_seed in todo:
        co = cohort if kind == "training_seed" else assign_splits(cohort, split_seed)
        work = f"{key}-sweep-seed{seed}-split{split_seed}"
        try:
            mace = train_run(context, model, "mace", st, settings, None, co, seed=seed,
                             work_key=work)
            acs = train_run(context, model, "acs", st, settings, mace, co, seed=seed,
                            work_key=work)
        except InsufficientLabelsError as exc:  # these splits cannot train: a row that says so
            context.log.warning(f"{model} {kind} (seed {seed}, split seed {split_seed}): {exc}")
            rows.append(_row(kind, seed, split_seed, None, None, f"cannot train: {exc}"))
            continue
        val = co.filter((pl.col("cohort") == "tested") & (pl.col("split") == "validation"))
        rows.append(_row(kind, seed, split_seed, acs,
                         validation_scores(st, acs, val, settings.predict_memory_mb)))
        context.log.info(f"{model} {kind} (seed {seed}, split seed {split_seed}): "
                         f"validation AUROC {rows[-1]['validation_auroc']:.4f}")
    return pl.DataFrame(rows, infer_schema_length=None)


def sweep_version(model: str, s: PipelineSettings) -> str:
    """The sweep's code version: its model's training version and the seeds it sweeps."""
    seeds = ",".join(map(str, s.seeds))
    splits = ",".join(map(str, s.split_seeds))
    swept = not s.sweep_models or model in s.sweep_models
    return f"{training_version(model, s)}/seeds-{seeds}/splits-{splits}/swept-{swept}"


def seed_sweep_asset(model: str, settings: PipelineSettings | None = None) -> dg.AssetsDefinition:
    @dg.asset(key=model_key(model, "seed_sweep"), tags={"model": model}, group_name="evaluation",
              kinds={"pytorch", "csv"},
              code_version=sweep_version(model, settings or loaded_settings()), pool="gpu",
              output_required=False,
              automation_condition=EAGER,
              deps=["cohort", model_spec(model).view,
                    model_key(model, "validation_predictions")],
              description=f"{model} trained again per extra training seed (ACS_SEEDS, splits "
                          "fixed) and per split seed (ACS_SPLIT_SEEDS), each run scored on its "
                          "validation split; every run and the mean / spread per kind. The "
                          "submission stays the default run (ACS_SEED). Skipped without extra "
                          "seeds or when the model is not in ACS_SWEEP_MODELS.")
    def seed_sweep(context: dg.AssetExecutionContext, storage: StorageResource,
                   settings: PipelineSettings):
        unknown = sorted(set(settings.sweep_models) - set(MODELS))
        if unknown:
            raise dg.Failure(f"ACS_SWEEP_MODELS names unknown model(s) {unknown}; the models "
                             f"are {list(MODELS)}", allow_retries=False)
        if settings.sweep_models and model not in settings.sweep_models:
            context.log.info(f"{model} is not in ACS_SWEEP_MODELS: no seed sweep")
            return
        extra = {*settings.seeds, *settings.split_seeds} - {settings.seed}
        if not extra:
            context.log.info("no seed other than ACS_SEED in ACS_SEEDS or ACS_SPLIT_SEEDS: "
                             "no seed sweep")
            return
        st = storage.get()
        runs = sweep(context, model, st, settings)
        summary = summarize(runs)
        w = frames.write_csv(st, RUNS.format(model=model), runs)
        ws = frames.write_csv(st, SUMMARY.format(model=model), summary)
        yield dg.MaterializeResult(
            metadata={"uri": dg.MetadataValue.path(w.uri),
                      "summary_uri": dg.MetadataValue.path(ws.uri), "dagster/row_count": w.rows,
                      "summary": md_table(summary),
                      "runs": md_table(runs.select("kind", "training_seed", "split_seed",
                                                   "validation_auroc", "selecting_auroc")),
                      "submission": f"the default run: training seed {settings.seed}, split "
                                    f"seed {settings.seed} ({runs['checkpoint'][0]})"},
            data_version=dg.DataVersion(w.version))

    return seed_sweep


@dg.definitions
def seeds() -> dg.Definitions:
    """One seed sweep per model."""
    settings = loaded_settings()
    return dg.Definitions(assets=[seed_sweep_asset(m, settings) for m in MODELS])
