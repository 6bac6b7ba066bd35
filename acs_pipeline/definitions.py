"""The Dagster code location ``acs_pipeline``: everything under ``acs_pipeline/defs``.

Owners, tags and groups are set here, once for every asset, so the asset graph reads like the
pipeline: groups in flow order, each asset tagged with its ``stage``, its ``model`` (set by
the per-model factories; keys ``<model>_<name>``) and whether it runs a network (``gpu``); filter
on them in the UI (``tag:model=s4``, ``tag:gpu=true``).
"""

import warnings
from pathlib import Path

import dagster as dg

# the groups in the order data flows through them; `released` (the authors' weights) is a side
# branch that reads the cohort and the tensors
FLOW = ("raw", "cohort", "tensors", "models", "predictions", "evaluation")
SIDE = ("released",)
# The quarantine lists what every ingest stage rejected, tensors included: in `cohort` it would
# draw an edge from `tensors` back to `cohort`.
REGROUP = {dg.AssetKey("quarantine"): "tensors"}
OWNERS = {
    "raw": "team:acs-data", "cohort": "team:acs-data", "tensors": "team:acs-data",
    "models": "team:acs-ml", "predictions": "team:acs-ml", "released": "team:acs-ml",
    "evaluation": "team:acs-evaluation",
}  # fmt: skip


def annotate(spec: dg.AssetSpec) -> dg.AssetSpec:
    """``spec`` in its flow group, with its team as owner and the stage/model/gpu tags."""
    group = REGROUP.get(spec.key, spec.group_name)
    if group not in OWNERS:
        raise ValueError(f"asset {spec.key.to_user_string()} is in group {group!r}, which has "
                         f"no place in the flow {FLOW + SIDE}")
    model = spec.tags.get("model")
    tags = {"stage": group, "gpu": str(model is not None and "pytorch" in spec.kinds).lower()}
    if model:
        tags["model"] = model
    return spec.replace_attributes(group_name=group, owners=[OWNERS[group]],
                                   tags={**spec.tags, **tags})


@dg.definitions
def defs() -> dg.Definitions:
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    with warnings.catch_warnings():  # map_asset_specs is "preview" in Dagster 1.13
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return loaded.map_asset_specs(func=annotate)
