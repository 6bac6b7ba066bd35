"""Seed sweeps: how much a model's validation AUROC moves with the seed.

``<model>_seed_sweep`` trains the model again (MACE, then ACS) once per extra training seed
(``ACS_SEEDS``; the cohort's splits fixed) and once per split seed (``ACS_SPLIT_SEEDS``; the
splits redrawn with ``cohort.build.assign_splits``, the training seed fixed at ``ACS_SEED``),
scores each run on its own validation split and writes every run and a summary per kind (mean,
sample standard deviation, min, max; the default run counts in both; a run whose splits have too
few cases to train is a row with its ``error``, counted as failed) under the storage root:
:data:`RUNS` and :data:`SUMMARY`. The default run is the graph's own ``<model>_acs_checkpoint``
(seed ``ACS_SEED``, the cohort's splits): it is not retrained, and it alone is the leaderboard
submission. With no extra seeds, or a model not in ``ACS_SWEEP_MODELS``, the asset still
materializes (so that ``evaluation_report``, downstream, runs): it removes the model's previous
sweep files, so no old sweep is shown, and its metadata says why there is no sweep.
:func:`current_sweeps` reads the sweeps back for the report.
"""

from collections.abc import Mapping, Sequence

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
from acs_pipeline.evaluation.sweeps import KINDS, SeedRun, SeedSweep, SeedSweepError, auroc_spread
from acs_pipeline.io import frames
from acs_pipeline.io.storage import Storage
from acs_pipeline.models.specs import model_spec

RUNS = "reports/seed_sweep/{model}_runs.csv"
SUMMARY = "reports/seed_sweep/{model}_summary.csv"
# What the report reads of a runs file.
COLUMNS = ("kind", "training_seed", "split_seed", "validation_auroc", "selecting_auroc", "error",
           "weights_sha256")


def summarize(runs: pl.DataFrame) -> pl.DataFrame:
    """Per kind of sweep: its runs and the default run (``kind == 'default'``), their number,
    mean, sample standard deviation (null for one run), min and max validation AUROC; runs that
    could not train (a null AUROC, their ``error`` says why) are counted in ``failed``
    (:func:`acs_pipeline.evaluation.sweeps.auroc_spread`, as the report computes them)."""
    default = runs.filter(pl.col("kind") == "default")
    parts = []
    for kind in KINDS:
        rows = pl.concat([default, runs.filter(pl.col("kind") == kind)])
        if len(rows) == len(default):
            continue
        spread = auroc_spread(rows["validation_auroc"].to_list())
        parts.append(pl.DataFrame({"kind": [kind], **{k: [v] for k, v in spread.items()}},
                                  schema_overrides={k: pl.Float64 for k in spread
                                                    if k.endswith("_auroc")}))
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
    return f"{training_version(model, s)}/seeds-{seeds}/splits-{splits}/swept-{swept}/sweep-2"


def unswept_reason(model: str, settings: PipelineSettings) -> str | None:
    """Why ``model`` has no sweep under ``settings``, or None when it has one."""
    if settings.sweep_models and model not in settings.sweep_models:
        return f"{model} is not in ACS_SWEEP_MODELS {settings.sweep_models}"
    if not {*settings.seeds, *settings.split_seeds} - {settings.seed}:
        return f"no seed other than ACS_SEED ({settings.seed}) in ACS_SEEDS or ACS_SPLIT_SEEDS"
    return None


def no_sweep(context: dg.AssetExecutionContext, model: str, st: Storage,
             why: str) -> dg.MaterializeResult:
    """The sweep without runs: the model's old sweep files removed, the reason recorded, a
    constant data version (nothing downstream changes because nothing was swept)."""
    removed = []
    for rel in (RUNS.format(model=model), SUMMARY.format(model=model)):
        if st.exists(rel):
            st.delete(rel)
            removed.append(st.uri(rel))
    context.log.info(f"no seed sweep of {model}: {why}"
                     + (f"; removed the previous sweep's {removed}" if removed else ""))
    return dg.MaterializeResult(
        metadata={"swept": False, "reason": why, "removed": dg.MetadataValue.json(removed)},
        data_version=dg.DataVersion("no-sweep"))


def seed_sweep_asset(model: str, settings: PipelineSettings | None = None) -> dg.AssetsDefinition:
    @dg.asset(key=model_key(model, "seed_sweep"), tags={"model": model}, group_name="evaluation",
              kinds={"pytorch", "csv"},
              code_version=sweep_version(model, settings or loaded_settings()), pool="gpu",
              automation_condition=EAGER,
              deps=["cohort", model_spec(model).view,
                    model_key(model, "validation_predictions")],
              description=f"{model} trained again per extra training seed (ACS_SEEDS, splits "
                          "fixed) and per split seed (ACS_SPLIT_SEEDS), each run scored on its "
                          "validation split; every run and the mean / spread per kind. The "
                          "submission stays the default run (ACS_SEED). Without extra "
                          "seeds or outside ACS_SWEEP_MODELS there is no sweep: the asset "
                          "removes the model's old sweep files and says why.")
    def seed_sweep(context: dg.AssetExecutionContext, storage: StorageResource,
                   settings: PipelineSettings):
        unknown = sorted(set(settings.sweep_models) - set(MODELS))
        if unknown:
            raise dg.Failure(f"ACS_SWEEP_MODELS names unknown model(s) {unknown}; the models "
                             f"are {list(MODELS)}", allow_retries=False)
        why = unswept_reason(model, settings)
        if why:
            return no_sweep(context, model, storage.get(), why)
        st = storage.get()
        runs = sweep(context, model, st, settings)
        summary = summarize(runs)
        w = frames.write_csv(st, RUNS.format(model=model), runs)
        ws = frames.write_csv(st, SUMMARY.format(model=model), summary)
        return dg.MaterializeResult(
            metadata={"swept": True, "uri": dg.MetadataValue.path(w.uri),
                      "summary_uri": dg.MetadataValue.path(ws.uri), "dagster/row_count": w.rows,
                      "summary": md_table(summary),
                      "runs": md_table(runs.select("kind", "training_seed", "split_seed",
                                                   "validation_auroc", "selecting_auroc")),
                      "submission": f"the default run: training seed {settings.seed}, split "
                                    f"seed {settings.seed} ({runs['checkpoint'][0]})"},
            data_version=dg.DataVersion(w.version))

    return seed_sweep


def _sweep(model: str, runs: pl.DataFrame, source: str) -> SeedSweep:
    def opt(v: object) -> object:
        return None if v is None or v == "" else v

    return SeedSweep(model=model, source=source, runs=[
        SeedRun(kind=r["kind"], training_seed=r["training_seed"], split_seed=r["split_seed"],
                validation_auroc=opt(r["validation_auroc"]),
                selecting_auroc=opt(r["selecting_auroc"]), error=opt(r["error"]))
        for r in runs.iter_rows(named=True)])


def current_sweeps(st: Storage, weights: Mapping[str, str],
                   models: Sequence[str] = MODELS) -> tuple[list[SeedSweep], dict[str, str]]:
    """The sweeps of ``models`` on the storage root whose default run is the current ACS
    checkpoint (``weights``: model -> weights SHA-256), and the reasons the others with a runs
    file are left out (another checkpoint's sweep, an unreadable file)."""
    shown, left_out = [], {}
    for m in models:
        rel = RUNS.format(model=m)
        if not st.exists(rel):
            continue
        try:
            runs = frames.read_csv(st, rel, infer_schema_length=None,
                                   schema_overrides={"error": pl.String,
                                                     "weights_sha256": pl.String})
            missing = sorted(set(COLUMNS) - set(runs.columns))
            if missing:
                raise SeedSweepError(f"it has no column(s) {missing}")
            default = runs.filter(pl.col("kind") == "default")["weights_sha256"].to_list()
            if default != [weights[m]]:
                left_out[m] = (f"its default run ({', '.join(str(d)[:12] for d in default)}) is "
                               f"not the current {m}_acs_checkpoint (weights sha256 "
                               f"{weights[m][:12]}); materialize {m}_seed_sweep again")
                continue
            shown.append(_sweep(m, runs, st.uri(rel)))
        except (SeedSweepError, pl.exceptions.PolarsError) as exc:
            left_out[m] = f"{st.uri(rel)} cannot be read as a sweep: {exc}"
    return shown, left_out


@dg.definitions
def seeds() -> dg.Definitions:
    """One seed sweep per model."""
    settings = loaded_settings()
    return dg.Definitions(assets=[seed_sweep_asset(m, settings) for m in MODELS])
