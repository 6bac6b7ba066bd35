"""The code location's default executor: per run, in one process or with a process per step
forked from a fork server that has already imported the heavy modules and built the definitions.

``auto`` (the default) runs a run in-process unless one of its steps trains or predicts with a
network (an asset tagged ``gpu=true``): those runs get a process per step, so a step's torch
memory goes back to the system when it ends and a crashed step fails alone. Measured through the
CLI on 7.5k ECGs (``benchmarks/pipeline.py``, 2 cores, the same session, 2026-12-06): the ingest
selection ran its first time in 18.6 s in-process against 20.0 s forked, and with nothing changed
in 3.9 s against 9.0 s (a fork server takes about 2 s to start, each forked step 0.1-1 s); the
ingest's own work runs in threads (ACS_MAX_WORKERS) either way. Forked runs preload torch and
Lightning as well and share the cores between their steps' torch threads (``ForkedExecutor``).

Under ``spawn`` (Dagster's default start) every step is a fresh interpreter that imports dagster,
polars, pyarrow and the code location and builds the definitions again (3-6 s per step on a busy
2-core machine): the same selection took 74.7 s and 56.6 s. With ``forkserver``,
``preload_modules`` and ``_forkserver`` (which builds the definitions once in the server) a
forked step starts in well under a second. ``in_process`` and ``multiprocess`` stay available by
config (``make demo`` passes ``in_process``); any ``start_method`` given in config wins over the
forkserver default. Whatever the mode, a run first freezes its process's long-lived objects for
Python's collector (``freeze_long_lived_objects``).
"""

import gc
import os
from collections.abc import Iterator

import dagster as dg
from dagster._core.definitions.dependency import NodeHandle  # not exported by dagster

# What a step imports anyway; preloaded once in the fork server. Great Expectations and
# scipy.signal are left out (and torch and Lightning, but for network runs, below): the
# definitions do not import them, only some steps do (scipy.signal: the ingest update steps,
# 0.7 s each, in parallel), and preloading them would delay the first step of every run.
_COMMON = ["dagster", "polars", "pyarrow", "pyarrow.parquet", "numpy"]
_LOCATION = ["acs_pipeline.definitions", "acs_pipeline.defs._forkserver"]  # last: builds defs
PRELOAD_MODULES = [*_COMMON, *_LOCATION]
DEFAULT_START_METHOD = {"forkserver": {"preload_modules": PRELOAD_MODULES}}
# A run that trains or predicts (``auto`` forks only those) preloads the network stack too:
# lightning alone takes 3.6 s to import, torch 1.0 s, and each network step would pay them
# again. The whole graph on the tests' tiny cohort through the CLI: 245 s without, see README.
NETWORK_PRELOAD_MODULES = [
    *_COMMON, "torch", "lightning.pytorch", "sklearn.metrics", "acs_pipeline.training.stages",
    *_LOCATION,
]
NETWORK_START_METHOD = {"forkserver": {"preload_modules": NETWORK_PRELOAD_MODULES}}


def _with_default_start(config: dict, start: dict = DEFAULT_START_METHOD) -> dict:
    """Multiprocess config with the forkserver start (and its preload) where none was chosen."""
    return {**config, "start_method": config.get("start_method") or start}


def runs_a_network(job: dg.JobDefinition, step_keys: list[str]) -> bool:
    """Whether any of the plan's ``step_keys`` materializes an asset tagged ``gpu=true``
    (definitions.py tags what trains or predicts with a network). Keys, not steps: the steps
    after a dynamic output (the ingest's update steps) are not resolved when the run starts."""
    layer = job.asset_layer
    nodes = {key.split(".")[0].split("[")[0] for key in step_keys}  # the job's top-level nodes
    for node in nodes:
        try:
            assets = layer.get_assets_def_for_node(NodeHandle(node, None))
        except Exception:  # noqa: BLE001  a node without an asset (an op job): no network
            continue
        if assets is not None and any(s.tags.get("gpu") == "true" for s in assets.specs):
            return True
    return False


class ForkedExecutor(dg.Executor):
    """Dagster's multiprocess executor, whose steps share the cores: unless ``ACS_TORCH_THREADS``
    is set, each step's torch uses ``cores // max_concurrent`` threads. (Two training steps
    with torch's default of a thread per core each: the whole graph of the tests' tiny cohort
    took 123-200 s through the CLI on 2 cores, 78 s with a thread per step.) Set through the
    run process's environment before the fork server starts, which builds the settings."""

    def __init__(self, multiprocess: dg.Executor, max_concurrent: int):
        self.multiprocess, self.max_concurrent = multiprocess, max(1, max_concurrent)

    @property
    def retries(self):
        return self.multiprocess.retries

    def execute(self, plan_context, execution_plan) -> Iterator[dg.DagsterEvent]:
        threads = max(1, (os.cpu_count() or 1) // self.max_concurrent)
        os.environ.setdefault("ACS_TORCH_THREADS", str(threads))
        yield from self.multiprocess.execute(plan_context, execution_plan)


def freeze_long_lived_objects() -> None:
    """Move what the process holds now into the cyclic collector's permanent generation.

    Called when the code location loads (``definitions.py``), when a run starts
    (``RunExecutor``) and in the fork server after its preload. A run's process (the CLI's, or
    the run worker Dagster starts for one run) holds some 250k objects of imports and
    definitions when the run starts, all alive until it exits. Python's cyclic collector
    rescans them at every full collection and again while the interpreter shuts down; frozen
    (``gc.freeze``), it skips them. Through the CLI with nothing changed (benchmarks/pipeline.py,
    7.5k ECGs, 2 cores, fresh instance per try, 2026-12-06): 3.0 s without, 2.55 s with, most
    of the difference in the interpreter's exit. The young generations are collected first
    (``gc.collect(1)``, milliseconds), so little garbage is frozen with them; what is frozen is
    never collected, which a process that runs one run and exits never notices (a test session
    running many keeps a little more memory).
    """
    gc.collect(1)
    gc.freeze()


class RunExecutor(dg.Executor):
    """Every run of the code location: freezes the run process's long-lived objects, then runs
    the plan in-process, or with ``multiprocess`` when it trains or predicts with a network
    (``runs_a_network``). Given only one of the two, always that one."""

    def __init__(self, in_process: dg.Executor | None, multiprocess: dg.Executor | None):
        if in_process is None and multiprocess is None:
            raise ValueError("RunExecutor needs an in-process or a multiprocess executor")
        self.in_process, self.multiprocess = in_process, multiprocess

    @property
    def retries(self):
        return (self.multiprocess or self.in_process).retries

    def execute(self, plan_context, execution_plan) -> Iterator[dg.DagsterEvent]:
        chosen = self.multiprocess or self.in_process
        if self.in_process is not None and self.multiprocess is not None:
            job = plan_context.job.get_definition()
            if not runs_a_network(job, list(execution_plan.step_keys_to_execute)):
                chosen = self.in_process
        freeze_long_lived_objects()
        yield from chosen.execute(plan_context, execution_plan)


_FIELDS = dg.multi_or_in_process_executor.config_schema.config_type.fields


def _create(init: dg.InitExecutorContext, config: dict) -> dg.Executor:
    """Dagster's multi-or-in-process executor for ``config`` (already resolved)."""
    return dg.multi_or_in_process_executor.executor_creation_fn(dg.InitExecutorContext(
        job=init.job, executor_def=dg.multi_or_in_process_executor, executor_config=config,
        instance=init.instance))


@dg.executor(
    name="acs_executor",
    config_schema=dg.Field(
        dg.Selector({"auto": _FIELDS["multiprocess"], **_FIELDS}), default_value={"auto": {}},
        description="auto (default): in-process, or multiprocess (its settings here) for runs "
                    "that train or predict with a network; or always in_process / multiprocess."),
    requirements=dg.multiple_process_executor_requirements(),
)
def acs_executor(init: dg.InitExecutorContext) -> dg.Executor:
    """Per run in-process or multiprocess (forkserver, heavy modules preloaded); see the module
    docstring."""
    mode, config = next(iter(init.executor_config.items()))
    if mode == "in_process":
        return RunExecutor(_create(init, {"in_process": config}), None)
    concurrent = config.get("max_concurrent") or os.cpu_count() or 1  # Dagster's default
    if mode == "multiprocess":
        return RunExecutor(None, ForkedExecutor(
            _create(init, {"multiprocess": _with_default_start(config)}), concurrent))
    network = _create(init, {"multiprocess": _with_default_start(config, NETWORK_START_METHOD)})
    return RunExecutor(_create(init, {"in_process": {"retries": config["retries"]}}),
                       ForkedExecutor(network, concurrent))


@dg.definitions
def executor_defs() -> dg.Definitions:
    return dg.Definitions(executor=acs_executor)
