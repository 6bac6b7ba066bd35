"""The authors' released weights: import them and predict with them, without training.

``released_weights`` verifies the files under ``ACS_RELEASED_WEIGHTS_URI`` (names and formats in
:mod:`acs_pipeline.models.released`) and copies them under ``models/released/`` with a manifest;
``<model>_released_predictions`` writes ``predictions/<model>/released_validation.csv``
(``ecg_id, acs, prediction``, like ``validation_predictions``) and
``predictions/<model>/released_holdout.csv`` (``ecg_id, acs``: the released weights are ACS
models, so there is no MACE column), under the authors' own prediction protocol for that model
(``RELEASED_PROTOCOLS``: ``authors_prediction_py`` for S4 and the CNNs, ``authors_test_py`` for
HuBERT-ECG), which the report row's name carries.

With no root configured (the demo) or no file for a model, these assets yield no output (with a
log line): the run succeeds, no materialization is recorded, and in the same run the steps
downstream of them are skipped (with no root, every ``released_predictions``). The
evaluation report therefore has no graph edge to them (a skipped upstream would skip it too): it
adds a ``<model> (released, <protocol>)`` row for each released validation file it finds while a
root is configured (see :func:`released_scores`). Materialize the ``released`` group before the
report.
"""

import hashlib
from typing import TYPE_CHECKING

import dagster as dg
import polars as pl

from acs_pipeline.defs.common import COHORT, EAGER, HOLDOUT_PREFIX, model_key
from acs_pipeline.defs.models.assets import PREDICTIONS
from acs_pipeline.defs.resources import PipelineSettings, StorageResource
from acs_pipeline.ingest.subset import iter_subset
from acs_pipeline.io import frames
from acs_pipeline.io.storage import Storage
from acs_pipeline.models.released import (
    MANIFEST,
    RELEASED_MODELS,
    RELEASED_PROTOCOLS,
    RELEASED_VIEWS,
    released_label,
)

if TYPE_CHECKING:
    from acs_pipeline.evaluation.inputs import ModelScores

# torch is imported inside the asset functions (through acs_pipeline.models.released.files and
# .predict), so loading the definitions stays fast.

RELEASED_CODE_VERSION = "released-2"
VALIDATION = "released_validation"
HOLDOUT = "released_holdout"
NOT_CONFIGURED = (
    "no released-weights root configured (ACS_RELEASED_WEIGHTS_URI): {what} skipped, no output"
)


def _released_root(storage: StorageResource, settings: PipelineSettings) -> Storage | None:
    if not settings.released_weights_uri:
        return None
    return Storage(settings.released_weights_uri, endpoint_url=storage.endpoint_url)


@dg.asset(
    group_name="released",
    kinds={"pytorch"},
    code_version=RELEASED_CODE_VERSION,
    output_required=False,
    description="The authors' released S4, ResNet-18, ResNet-50, ECG-OMI and HuBERT-ECG weights "
    "from "
    "ACS_RELEASED_WEIGHTS_URI: read through the allow-listing unpickler, loaded "
    "strictly into our modules, copied under models/released/. Skipped (no output) "
    "when no root is configured.",
)
def released_weights(
    context: dg.AssetExecutionContext, storage: StorageResource, settings: PipelineSettings
):
    from acs_pipeline.models.released.files import import_released

    source = _released_root(storage, settings)
    if source is None:
        context.log.info(NOT_CONFIGURED.format(what="released_weights and released predictions"))
        return
    st = storage.get()
    imported = import_released(source, st)
    meta: dict = {
        "source": source.root,
        "manifest": dg.MetadataValue.path(st.uri(MANIFEST)),
        "models": dg.MetadataValue.json([m.name for m in imported]),
        "missing": dg.MetadataValue.json(
            [m for m in RELEASED_MODELS if m not in {i.name for i in imported}]
        ),
    }
    digest = hashlib.sha256()
    for m in imported:
        context.log.info(
            f"{m.name}: {m.source_uri} -> {m.registry_name}, {m.n_params:,} parameters, "
            f"sha256 {m.sha256[:16]}..." + (f", ignored {m.ignored_keys}" if m.ignored_keys else "")
        )
        meta |= {
            f"{m.name}_uri": dg.MetadataValue.path(m.source_uri),
            f"{m.name}_stored_uri": dg.MetadataValue.path(st.uri(m.stored_rel)),
            f"{m.name}_bytes": m.bytes,
            f"{m.name}_sha256": m.sha256,
            f"{m.name}_parameters": m.n_params,
            f"{m.name}_module": m.registry_name,
            f"{m.name}_config": dg.MetadataValue.json(m.config),
            f"{m.name}_ignored_keys": dg.MetadataValue.json(m.ignored_keys),
        }
        digest.update(f"{m.name}:{m.sha256}\n".encode())
    yield dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(digest.hexdigest()[:16]))


def _validation_rows(st: Storage) -> pl.DataFrame:
    return frames.read_parquet(st, COHORT).filter(
        (pl.col("cohort") == "tested") & (pl.col("split") == "validation")
    )


def released_predictions_asset(model: str) -> dg.AssetsDefinition:
    view = RELEASED_VIEWS[model]
    protocol = RELEASED_PROTOCOLS[model]

    @dg.asset(
        key=model_key(model, "released_predictions"),
        tags={"model": model},
        group_name="released",
        kinds={"pytorch", "csv"},
        code_version=RELEASED_CODE_VERSION,
        output_required=False,
        deps=["released_weights", "cohort", view, f"holdout_{view}"],
        automation_condition=EAGER,
        description=f"ACS probabilities of the authors' released {model} weights on the tested "
        f"cohort's validation split and on every holdout ECG (no training), predicted as the "
        f"authors' script does ({protocol}). Skipped "
        f"(no output) when no released {model} file was imported.",
    )
    def _asset(
        context: dg.AssetExecutionContext, storage: StorageResource, settings: PipelineSettings
    ):
        from acs_pipeline.evaluation.ranking import auroc
        from acs_pipeline.models.released.files import load_imported
        from acs_pipeline.models.released.predict import predict_released_parts
        from acs_pipeline.training import stages

        if not settings.released_weights_uri:
            context.log.info(NOT_CONFIGURED.format(what=f"{model}_released_predictions"))
            return
        st = storage.get()
        loaded = load_imported(st, model, protocol=protocol)
        if loaded is None:
            context.log.info(
                f"no released {model} file among the imported weights "
                f"({st.uri(MANIFEST)}): {model}_released_predictions skipped"
            )
            return
        stages.set_threads(settings.torch_threads)
        val = _validation_rows(st)
        budget = settings.predict_memory_mb  # each step reads one part, one batch at a time
        ids, prob = predict_released_parts(
            loaded, iter_subset(st, view, val["ecg_id"].to_list()), budget)
        found = pl.DataFrame({"ecg_id": ids.tolist(), "prediction": prob},
                             schema={"ecg_id": pl.String, "prediction": pl.Float64})
        df = val.select("ecg_id", "acs").join(found, on="ecg_id", how="inner").sort("ecg_id")
        prob = df["prediction"].to_numpy()
        wv = frames.write_csv(st, PREDICTIONS.format(model=model, name=VALIDATION), df)
        hold_ids, hp = predict_released_parts(
            loaded, iter_subset(st, view, prefix=HOLDOUT_PREFIX), budget)
        hdf = pl.DataFrame({"ecg_id": hold_ids.tolist(), "acs": hp})
        wh = frames.write_csv(st, PREDICTIONS.format(model=model, name=HOLDOUT), hdf)
        y = df["acs"].to_numpy()
        score = float(auroc(y, prob)) if 0 < y.sum() < len(y) else None
        info = loaded.info
        yield dg.MaterializeResult(
            metadata={
                "uri": dg.MetadataValue.path(wv.uri),
                "holdout_uri": dg.MetadataValue.path(wh.uri),
                "dagster/row_count": wv.rows,
                "holdout_rows": wh.rows,
                "sha256": wv.sha256,
                "holdout_sha256": wh.sha256,
                "auroc": dg.MetadataValue.float(score) if score is not None else "undefined",
                "missing_tensors": len(val) - len(df),
                "weights_uri": dg.MetadataValue.path(info.source_uri),
                "weights_sha256": info.sha256,
                "module": info.registry_name,
                "protocol": loaded.protocol,
            },
            data_version=dg.DataVersion(
                hashlib.sha256((wv.sha256 + wh.sha256).encode()).hexdigest()[:16]
            ),
        )

    return _asset


def released_scores(st: Storage, settings: PipelineSettings) -> list["ModelScores"]:
    """The report rows ``<model> (released, <protocol>)``: one per released validation file under
    ``st``, while a released-weights root is configured (empty otherwise); the protocol is the
    one ``<model>_released_predictions`` predicts with (``RELEASED_PROTOCOLS``)."""
    if not settings.released_weights_uri:
        return []
    from acs_pipeline.evaluation.inputs import ModelScores
    from acs_pipeline.models.released.files import read_manifest

    manifest = read_manifest(st)
    scores = []
    for model in RELEASED_MODELS:
        rel = PREDICTIONS.format(model=model, name=VALIDATION)
        if model not in manifest or not st.exists(rel):
            continue
        p = frames.read_csv(st, rel, schema_overrides={"ecg_id": pl.String})
        info = manifest[model]
        scores.append(
            ModelScores(
                name=released_label(model, RELEASED_PROTOCOLS[model]),
                validation=p["prediction"].to_numpy(),
                kind="model",
                ecg_ids=p["ecg_id"].to_list(),
                lineage=f"{info.source_uri} (released weights, sha256 {info.sha256[:12]}, "
                f"{info.registry_name}; protocol {RELEASED_PROTOCOLS[model]}; "
                f"predictions {st.uri(rel)})",
            )
        )
    return scores


@dg.definitions
def released_defs() -> dg.Definitions:
    """The released-weights import and one prediction asset per released model."""
    return dg.Definitions(
        assets=[released_weights, *[released_predictions_asset(m) for m in RELEASED_MODELS]]
    )
