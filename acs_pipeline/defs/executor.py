"""The code location's default executor: Dagster's multiprocess executor, with its steps forked
from a fork server that has already imported the heavy modules and built the definitions.

Under ``spawn`` (Dagster's default) every step is a fresh interpreter that imports dagster,
polars, pyarrow and the code location and builds the definitions again: 3-6 s per step on a
busy 2-core machine, one after another. With ``forkserver``, ``preload_modules`` and
``_forkserver`` (which builds the definitions once in the server) a step starts in well under a
second; the server costs 2-3 s once per run. Measured through the CLI on 7.5k ECGs
(``benchmarks/pipeline.py``, one session, load 1.6-4.6): first run 74.7 s (spawn) -> 27.3 s,
no-change run 56.6 s -> 12.5 s (in-process: 27.8 s and 9.3 s, without parallel steps). The
in-process mode stays available by config (``execution: config: in_process: {}``, as
``make demo`` passes), and any ``start_method`` given in config wins over the default.
"""

import dagster as dg

# What a step imports anyway; preloaded once in the fork server. torch, lightning, Great
# Expectations and scipy.signal are left out: the definitions do not import them, only some steps
# do (scipy.signal: the ingest update steps, 0.7 s each, in parallel), and preloading them would
# delay the first step of every run, a run with nothing to ingest included.
PRELOAD_MODULES = [
    "dagster",
    "polars",
    "pyarrow",
    "pyarrow.parquet",
    "numpy",
    "acs_pipeline.definitions",
    "acs_pipeline.defs._forkserver",
]
DEFAULT_START_METHOD = {"forkserver": {"preload_modules": PRELOAD_MODULES}}


def _with_default_start(config: dict) -> dict:
    """The user's config, with the forkserver start (and its preload) where none was chosen."""
    if "multiprocess" not in config:
        return config
    multi = dict(config["multiprocess"])
    if not multi.get("start_method"):
        multi["start_method"] = DEFAULT_START_METHOD
    return {"multiprocess": multi}


acs_executor = dg.multi_or_in_process_executor.configured(
    _with_default_start,
    name="acs_executor",
    config_schema=dg.multi_or_in_process_executor.config_schema.as_field(),
    description="Multiprocess (forkserver, heavy modules preloaded) or in-process by config.",
)


@dg.definitions
def executor_defs() -> dg.Definitions:
    return dg.Definitions(executor=acs_executor)
