"""The Dagster code location ``acs_pipeline``: everything under ``acs_pipeline/defs``.

Owners, tags and groups are set here, once for every asset, so the asset graph reads like the
pipeline: groups in flow order, each asset tagged with its ``stage``, its ``model`` (set by
the per-model factories; keys ``<model>_<name>``) and whether it runs a network (``gpu``); filter
on them in the UI (``tag:model=s4``, ``tag:gpu=true``).
"""

import functools
import importlib
import pkgutil
import warnings

import dagster as dg

from acs_pipeline.defs.executor import freeze_long_lived_objects

# What a process loaded before the code location (Dagster, its instance) lives as long as the
# process: frozen, the collector's full collections while the definitions load skip it (0.08 s
# of a 2.2 s no-change CLI run). The executor freezes again when a run starts.
freeze_long_lived_objects()

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


def load_defs_folder() -> dg.Definitions:
    """Every module under ``acs_pipeline/defs`` by the rule of ``dg.load_from_defs_folder``: a
    module's ``@dg.definitions`` functions when it has any, else its Dagster objects.

    Our own walk, because ``load_from_defs_folder`` also imports every installed Dagster
    component library (dagster-aws's among them) to describe them in the UI's component
    catalogue, which this project does not use: 1.3 s of each of the 1.9 s it took, paid by
    every process that loads the definitions (the CLI, the code server, each run's fork
    server). ``acs_pipeline_tests/test_definitions.py`` checks both give the same definitions.
    """
    from dagster.components.definitions import LazyDefinitions  # what @dg.definitions makes

    import acs_pipeline.defs as folder

    parts = []
    for info in pkgutil.walk_packages(folder.__path__, prefix=f"{folder.__name__}."):
        path = info.name.replace(".", "/") + ("/__init__.py" if info.ispkg else ".py")
        try:
            module = importlib.import_module(info.name)
            lazy = [v for v in vars(module).values() if isinstance(v, LazyDefinitions)]
            if lazy:
                parts += [f() for f in lazy]
                continue
            with warnings.catch_warnings():  # "preview" in Dagster 1.13
                warnings.simplefilter("ignore", dg.PreviewWarning)
                parts.append(dg.load_definitions_from_module(module))
        except Exception as exc:  # name the file, as Dagster's loader does
            raise dg.DagsterInvalidDefinitionError(
                f"Error while loading the definitions of {path}: {exc}") from exc
    return dg.Definitions.merge(*parts)


@functools.cache
def _build(key: tuple[tuple[str, str], ...]) -> dg.Definitions:
    loaded = load_defs_folder()
    with warnings.catch_warnings():  # map_asset_specs is "preview" in Dagster 1.13
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return loaded.map_asset_specs(func=annotate)


@dg.definitions
def defs() -> dg.Definitions:
    """The code location. Built once per process and settings (``settings_key``): one CLI run
    reconstructs the job five times or more, and a module-level ``Definitions`` would not see
    the settings change (as the tests change them)."""
    from acs_pipeline.defs.resources import settings_key

    return _build(settings_key())
