"""RETRY_IO with @transient_only: a step is retried for a transient storage fault only; an access
fault or any other error fails it at once, naming what failed."""

import dagster as dg
import pytest

from acs_pipeline.definitions import defs
from acs_pipeline.defs.common import transient_only
from acs_pipeline.defs.resources import resources_from_env
from acs_pipeline.io.objects import StorageAccessError, TransientStorageError
from acs_pipeline_tests.ingest.raw_tree import write_tree
from acs_pipeline_tests.s3_fixtures import upload_tree

NO_WAIT = dg.RetryPolicy(max_retries=2)


def _retries(result: dg.ExecuteInProcessResult) -> int:
    return sum(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)


def _failure(result: dg.ExecuteInProcessResult) -> str:
    [event] = [e for e in result.all_events if e.is_step_failure]
    data = event.step_failure_data
    return f"{data.error.message if data.error else ''} {data.user_failure_data}"


def _run(*errors: Exception, generator: bool = False) -> tuple[dg.ExecuteInProcessResult, int]:
    """Materialize an asset that raises ``errors`` in turn, then succeeds."""
    attempts = [0]

    def body():
        attempts[0] += 1
        if attempts[0] <= len(errors):
            raise errors[attempts[0] - 1]

    if generator:
        @dg.asset(retry_policy=NO_WAIT)
        @transient_only
        def flaky(context: dg.AssetExecutionContext):
            body()
            yield dg.MaterializeResult(metadata={"attempt": attempts[0]})
    else:
        @dg.asset(retry_policy=NO_WAIT)
        @transient_only
        def flaky(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            body()
            return dg.MaterializeResult(metadata={"attempt": attempts[0]})

    return dg.materialize([flaky], raise_on_error=False), attempts[0]


@pytest.mark.parametrize("generator", [False, True])
def test_transient_faults_are_retried(generator: bool) -> None:
    result, attempts = _run(TransientStorageError("GetObject s3://b/k: SlowDown"),
                            ConnectionResetError("reset"), generator=generator)
    assert result.success and attempts == 3 and _retries(result) == 2


@pytest.mark.parametrize("generator", [False, True])
@pytest.mark.parametrize("error", [
    StorageAccessError("GetObject s3://b/p/k: access denied [bucket 'b', prefix 'p/']", "b", "p/"),
    KeyError("column"),
    ValueError("bad setting"),
])
def test_permanent_errors_fail_at_once(error: Exception, generator: bool) -> None:
    result, attempts = _run(error, generator=generator)
    assert not result.success and attempts == 1 and _retries(result) == 0
    assert type(error).__name__ in _failure(result) and str(error.args[0]) in _failure(result)


def test_failure_and_retry_requests_pass_through() -> None:
    result, attempts = _run(dg.Failure("said so", allow_retries=True))
    assert result.success and attempts == 2  # the asset's own choice stands


def _manifest_run(tmp_path, s3_server, s3_bucket, proxy) -> dg.ExecuteInProcessResult:
    write_tree(tmp_path / "raw")
    upload_tree(s3_server, s3_bucket, "raw", tmp_path / "raw")
    env = {"ACS_RAW_URI": f"s3://{s3_bucket}/raw", "ACS_STORAGE_URI": str(tmp_path / "store"),
           "AWS_ENDPOINT_URL": proxy.endpoint}
    return dg.materialize([a for a in defs().assets if "ecg_manifest" in
                           {k.to_user_string() for k in a.keys}],
                          resources=resources_from_env(env), raise_on_error=False)


def test_manifest_asset_fails_once_on_access_denied(tmp_path, s3_server, s3_bucket,
                                                    faulty_s3) -> None:
    faulty_s3.inject("denied", f"/{s3_bucket}/raw/ecg-waveforms-npz/ab/", times=100)
    result = _manifest_run(tmp_path, s3_server, s3_bucket, faulty_s3)
    assert not result.success and _retries(result) == 0
    assert f"bucket '{s3_bucket}', prefix 'raw/ecg-waveforms-npz/ab/'" in _failure(result)
    assert faulty_s3.count(outcome="denied") <= 4  # one request per denied file, no retries
    assert not (tmp_path / "store" / "tables" / "manifest.parquet").exists()


def test_manifest_asset_is_retried_after_a_transient_fault(tmp_path, s3_server, s3_bucket,
                                                          faulty_s3) -> None:
    stuck = f"/{s3_bucket}/raw/ecg-waveforms-npz/aa/aa00000000.npz"
    faulty_s3.inject("error500", stuck, times=5)  # every attempt of the client's first try
    result = _manifest_run(tmp_path, s3_server, s3_bucket, faulty_s3)
    assert result.success and _retries(result) == 1  # RETRY_IO's second attempt reads it
    assert faulty_s3.count(stuck) == 6
    manifest = result.asset_materializations_for_node("ecg_manifest")[0].metadata
    assert manifest["files_rejected"].value == 1  # the misnamed file only: nothing unreadable
