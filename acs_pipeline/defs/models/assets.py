"""Per-model assets: MACE pre-training, ACS fine-tuning, validation and holdout predictions."""

import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import polars as pl

from acs_pipeline.cohort.tables import CLASSICAL_FLAGS
from acs_pipeline.defs.common import (
    COHORT,
    EAGER,
    HOLDOUT_PREFIX,
    WHEN_CHANGED,
    md_table,
    model_key,
)
from acs_pipeline.defs.resources import PipelineSettings, StorageResource, loaded_settings
from acs_pipeline.ingest import read as ingest
from acs_pipeline.io import frames
from acs_pipeline.io.storage import Storage
from acs_pipeline.models.specs import TRAINING_CODE_VERSION, model_spec

if TYPE_CHECKING:
    from acs_pipeline.training.stages import StageResult

# torch, Lightning and scikit-learn are imported inside the asset functions, so that loading
# the definitions (every step process does) stays fast.

# The models of the benchmark that the graph trains; ``hubert`` is HuBERT-ECG at the profile's
# size (large in the paper profile, models/specs.py HUBERT_SIZE).
MODELS = ("resnet18", "resnet50", "ecg_omi", "s4", "hubert")
RESULT = "models/{model}/{stage}/current.json"
PREDICTIONS = "predictions/{model}/{name}.csv"
TRAIN_RETRY = dg.RetryPolicy(max_retries=1, delay=30)


def training_version(model: str, s: PipelineSettings) -> str:
    """The code version of ``model``'s trained assets: the training code's version and the
    settings that change what is trained (profile, training seed, checkpoint selection and, for
    the paper HuBERT-ECG, its pretrained start), so changing one marks the checkpoints stale."""
    parts = [TRAINING_CODE_VERSION, s.profile, f"seed-{s.seed}", s.selection]
    if model.startswith("hubert") and s.profile == "paper":
        parts.append(f"init-{s.hubert_pretrained_uri or 'unset'}")
    return "/".join(parts)


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).parent, check=False)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _inputs(st: Storage, view: str) -> dict[str, str]:
    """Content versions of a stage's inputs: the cohort file and the tensor shards."""
    import hashlib

    return {"cohort": hashlib.sha256(st.read_bytes(COHORT)).hexdigest()[:16],
            view: ingest.view_version(st, view)}


def read_result(st: Storage, model: str, stage: str) -> "StageResult":
    from acs_pipeline.training import stages

    rel = RESULT.format(model=model, stage=stage)
    if not st.exists(rel):
        raise dg.Failure(f"{model}_{stage}_checkpoint has not been materialized ({st.uri(rel)})")
    return stages.StageResult.from_json(st.read_bytes(rel))


def _checkpoint_metadata(res: "StageResult") -> dict:
    return {
        "uri": dg.MetadataValue.path(res.checkpoint_uri),
        "weights_uri": dg.MetadataValue.path(res.weights_uri),
        "model_card": dg.MetadataValue.path(res.model_card_uri),
        "weights_bytes": res.weights_bytes,
        "weights_sha256": res.weights_sha256,
        "parameters": res.n_params,
        "profile": res.profile,
        "config": dg.MetadataValue.json(res.config),
        "epochs_run": res.epochs_run,
        "global_step": res.global_step,
        "best_val_auroc": dg.MetadataValue.float(res.best_val_auroc),
        "best_val_loss": dg.MetadataValue.float(res.best_val_loss),
        "input_data_versions": dg.MetadataValue.json(res.inputs),
        "data_counts": dg.MetadataValue.json(res.counts),
        "wall_s": round(res.wall_s, 2),
        "samples_per_s": round(res.samples_per_s, 1),
        "work_key": res.work_key,
        "resumed": res.resumed,
        "selection": res.selection,
        "git_revision": git_revision(),
    }


def train_run(context: dg.AssetExecutionContext, model: str, stage: str, st: Storage,
              settings: PipelineSettings, init: "StageResult | None", cohort: pl.DataFrame, *,
              seed: int, work_key: str) -> "StageResult":
    """Train one stage of ``model`` on ``cohort`` with training seed ``seed`` in the work folder
    ``work_key``, starting from ``init``'s weights (the MACE stage's, for ``acs``)."""
    from acs_pipeline.training import stages
    from acs_pipeline.training.recipes import plan

    view = model_spec(model).view
    stages.set_threads(settings.torch_threads)
    p = plan(model, stage, settings.profile, seed=seed,
             accelerator=settings.accelerator, devices=settings.devices,
             strategy=settings.strategy, logger=settings.logger,
             tracking_uri=settings.mlflow_tracking_uri, experiment_name=settings.experiment_name)
    if not p.train:  # HuBERT-ECG's MACE stage in the paper profile: the pretrained start
        from acs_pipeline.training import pretrained

        return pretrained.pass_through(st, p, settings.hubert_pretrained_uri, work_key=work_key,
                                       inputs=_inputs(st, view), endpoint_url=st.endpoint_url)
    init_weights = stages.load_stage_weights(st, init) if init else None
    with tempfile.TemporaryDirectory(prefix="acs-stage-") as tmp:  # the stage's rows, mapped
        data = stages.load_stage_data(st, view, cohort, stage, Path(tmp), max_train=p.max_train,
                                      seed=seed, selection=settings.selection)
        context.log.info(f"{model}/{stage} (seed {seed}): {data.counts()}")
        return stages.train_stage(st, p, data, work_key=work_key, inputs=_inputs(st, view),
                                  init_weights=init_weights)


def _train(context: dg.AssetExecutionContext, model: str, stage: str, st: Storage,
           settings: PipelineSettings, init: "StageResult | None") -> dg.MaterializeResult:
    """Train a stage whenever Dagster materializes it. Its work folder is keyed by the root run:
    a retry or a re-execution from failure resumes the crashed attempt's ``last.ckpt``, a new
    run trains from scratch. ``current.json``, written last, hands the result on."""
    res = train_run(context, model, stage, st, settings, init, frames.read_parquet(st, COHORT),
                    seed=settings.seed, work_key=context.run.root_run_id or context.run.run_id)
    st.write_bytes(RESULT.format(model=model, stage=stage), res.to_json().encode())
    return dg.MaterializeResult(metadata=_checkpoint_metadata(res),
                                data_version=dg.DataVersion(res.weights_sha256[:16]))


def validation_scores(st: Storage, res: "StageResult", rows: pl.DataFrame,
                      budget_mb: float) -> pl.DataFrame:
    """``ecg_id, acs, prediction`` of an ACS stage on the cohort ``rows`` that have a tensor,
    in the rows' order."""
    from acs_pipeline.training import stages

    ids, probs = stages.predict_view(st, {"prediction": res}, model_spec(res.model).view,
                                     rows["ecg_id"].to_list(), budget_mb=budget_mb)
    found = pl.DataFrame({"ecg_id": ids.tolist(), "prediction": probs["prediction"]},
                         schema={"ecg_id": pl.String, "prediction": pl.Float64})
    return rows.select("ecg_id", "acs").join(found, on="ecg_id", how="inner",
                                             maintain_order="left")


def _prediction_metadata(w: frames.Written, **extra) -> dict:
    return {"uri": dg.MetadataValue.path(w.uri), "dagster/row_count": w.rows,
            "bytes": w.bytes, "sha256": w.sha256, **extra}


def model_assets(model: str, settings: PipelineSettings | None = None) -> list:
    """``model``'s checkpoints and predictions; code versions from ``settings`` (default: the
    environment's, as the code location loads them)."""
    view = model_spec(model).view
    version = training_version(model, settings or loaded_settings())
    tags = {"gpu": "true", "model": model}

    @dg.asset(key=model_key(model, "mace_checkpoint"), group_name="models", kinds={"pytorch"},
              code_version=version, deps=["cohort", view], pool="gpu",
              retry_policy=TRAIN_RETRY, tags=tags, automation_condition=WHEN_CHANGED,
              description=f"{model} pre-trained on MACE in the untested cohort.")
    def mace_checkpoint(context: dg.AssetExecutionContext, storage: StorageResource,
                        settings: PipelineSettings) -> dg.MaterializeResult:
        return _train(context, model, "mace", storage.get(), settings, None)

    @dg.asset(key=model_key(model, "acs_checkpoint"), group_name="models", kinds={"pytorch"},
              code_version=version, deps=["cohort", view, mace_checkpoint],
              pool="gpu", retry_policy=TRAIN_RETRY, tags=tags, automation_condition=WHEN_CHANGED,
              description=f"{model} fine-tuned on ACS in the tested cohort from the MACE "
                          "weights.")
    def acs_checkpoint(context: dg.AssetExecutionContext, storage: StorageResource,
                       settings: PipelineSettings) -> dg.MaterializeResult:
        st = storage.get()
        return _train(context, model, "acs", st, settings, read_result(st, model, "mace"))

    @dg.asset(key=model_key(model, "validation_predictions"), group_name="predictions",
              kinds={"pytorch", "csv"}, code_version="1", deps=[acs_checkpoint, "cohort", view],
              automation_condition=EAGER, tags={"model": model},
              description=f"{model} ACS probabilities on the tested cohort's validation split.")
    def validation_predictions(storage: StorageResource,
                               settings: PipelineSettings) -> dg.MaterializeResult:
        from acs_pipeline.training import stages

        st = storage.get()
        stages.set_threads(settings.torch_threads)
        res = read_result(st, model, "acs")
        co = frames.read_parquet(st, COHORT).filter(
            (pl.col("cohort") == "tested") & (pl.col("split") == "validation"))
        df = validation_scores(st, res, co, settings.predict_memory_mb)
        prob = df["prediction"].to_numpy()
        w = frames.write_csv(st, PREDICTIONS.format(model=model, name="validation"), df)
        from acs_pipeline.evaluation.ranking import auroc

        return dg.MaterializeResult(
            metadata=_prediction_metadata(
                w, auroc=dg.MetadataValue.float(auroc(df["acs"].to_numpy(), prob)),
                missing_tensors=len(co) - len(df), checkpoint=res.checkpoint_uri),
            data_version=dg.DataVersion(w.version))

    @dg.asset(key=model_key(model, "holdout_predictions"), group_name="predictions",
              kinds={"pytorch", "csv"}, code_version="1",
              deps=[acs_checkpoint, mace_checkpoint, f"holdout_{view}"],
              automation_condition=EAGER, tags={"model": model},
              description=f"{model} ACS and MACE probabilities for every holdout ECG.")
    def holdout_predictions(storage: StorageResource,
                            settings: PipelineSettings) -> dg.MaterializeResult:
        from acs_pipeline.training import stages

        st = storage.get()
        stages.set_threads(settings.torch_threads)
        results = {stage: read_result(st, model, stage) for stage in ("acs", "mace")}
        ids, cols = stages.predict_view(st, results, view, prefix=HOLDOUT_PREFIX,
                                        budget_mb=settings.predict_memory_mb)
        df = pl.DataFrame({"ecg_id": ids.tolist(), **cols})
        w = frames.write_csv(st, PREDICTIONS.format(model=model, name="holdout"), df)
        return dg.MaterializeResult(metadata=_prediction_metadata(w),
                                    data_version=dg.DataVersion(w.version))

    return [mace_checkpoint, acs_checkpoint, validation_predictions, holdout_predictions]




@dg.asset(key=model_key("logistic_baseline", "validation_predictions"), group_name="predictions",
          kinds={"scikitlearn", "csv"}, code_version="1", deps=["cohort"],
          automation_condition=EAGER, tags={"model": "logistic_baseline"},
          description="Unpenalised logistic regression on the four classical ECG flags, fit on "
                      "the tested cohort's training patients (train and selection splits: "
                      "nothing to select).")
def logistic_baseline_predictions(storage: StorageResource) -> dg.MaterializeResult:
    from acs_pipeline.models.baseline import fit_logistic

    st = storage.get()
    co = frames.read_parquet(st, COHORT).filter(pl.col("cohort") == "tested")
    train = co.filter(pl.col("split").is_in(["train", "selection"]))
    val = co.filter(pl.col("split") == "validation")
    model = fit_logistic(train.select(CLASSICAL_FLAGS).to_numpy().astype(float),
                         train["acs"].to_numpy())
    prob = model.predict_proba(val.select(CLASSICAL_FLAGS).to_numpy().astype(float))
    df = val.select("ecg_id", "acs").with_columns(prediction=pl.Series(prob))
    w = frames.write_csv(st, PREDICTIONS.format(model="logistic_baseline", name="validation"),
                         df)
    coef = pl.DataFrame({"flag": list(model.coefficients),
                         "coefficient": list(model.coefficients.values())})
    from acs_pipeline.evaluation.ranking import auroc

    return dg.MaterializeResult(
        metadata=_prediction_metadata(
            w, coefficients=md_table(coef),
            auroc=dg.MetadataValue.float(auroc(df["acs"].to_numpy(), prob))),
        data_version=dg.DataVersion(w.version))


@dg.definitions
def models() -> dg.Definitions:
    """The per-model assets (built by a factory) and the logistic baseline."""
    settings = loaded_settings()
    return dg.Definitions(assets=[*[a for m in MODELS for a in model_assets(m, settings)],
                                  logistic_baseline_predictions])
