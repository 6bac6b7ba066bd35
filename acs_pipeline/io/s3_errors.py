"""What an S3 failure means: its kind (missing, transient, access, other) and one clear sentence.

Used by :mod:`acs_pipeline.io.s3`; the kinds map to the errors of :mod:`acs_pipeline.io.objects`.
"""

from __future__ import annotations

import http.client
from urllib.parse import urlparse

import botocore.exceptions as bce
import urllib3.exceptions
from boto3.exceptions import S3UploadFailedError

NOT_FOUND_CODES = ("NoSuchKey", "404", "NotFound")
CLIENT_ERRORS = (bce.BotoCoreError, bce.ClientError)
UPLOAD_ERRORS = (*CLIENT_ERRORS, S3UploadFailedError)
# Failures while streaming a body: botocore has already returned the response, so it does not
# retry them; we do.
TRANSIENT_READ_ERRORS: tuple[type[BaseException], ...] = (
    bce.IncompleteReadError,
    bce.ResponseStreamingError,
    bce.ReadTimeoutError,
    bce.ConnectionClosedError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
    http.client.IncompleteRead,
    ConnectionError,
    TimeoutError,
)
# Error codes no retry can help: the request's identity or its bucket is wrong.
_ACCESS_CODES = frozenset({
    "AccessDenied", "403", "AllAccessDisabled", "AccountProblem", "InvalidAccessKeyId",
    "SignatureDoesNotMatch", "ExpiredToken", "TokenRefreshRequired", "InvalidToken",
    "InvalidClientTokenId", "NoSuchBucket", "PermanentRedirect",
})
# Error codes botocore retries (throttling, timeouts); any HTTP status >= 500 and 429 too.
_TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestTimeout",
    "RequestTimeoutException", "BandwidthLimitExceeded", "TooManyRequestsException",
    "InternalError", "ServiceUnavailable", "PriorRequestNotComplete",
})
_TRANSIENT_BOTO = (bce.EndpointConnectionError, bce.ConnectTimeoutError, bce.ReadTimeoutError,
                   bce.ConnectionClosedError, bce.ResponseStreamingError,
                   bce.IncompleteReadError, bce.HTTPClientError)
_ACCESS_BOTO = (bce.NoCredentialsError, bce.PartialCredentialsError,
                bce.CredentialRetrievalError)
# The IAM permission each S3 operation needs, for error messages.
_PERMISSION = {
    "ListObjectsV2": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "DeleteObject": "s3:DeleteObject",
}


def s3_error_code(exc: BaseException) -> str | None:
    """The S3 error code of a ``ClientError`` (``'NoSuchKey'``, ``'404'`` for HEAD), else None."""
    if isinstance(exc, bce.ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) or None
    return None


def error_kind(exc: BaseException) -> str:
    """``'missing'``, ``'transient'``, ``'access'`` or ``'other'`` for a botocore failure."""
    inner = exc.__cause__ or exc.__context__
    if isinstance(exc, S3UploadFailedError) and isinstance(inner, CLIENT_ERRORS):
        exc = inner
    if isinstance(exc, _ACCESS_BOTO):
        return "access"
    if isinstance(exc, (*_TRANSIENT_BOTO, *TRANSIENT_READ_ERRORS)):
        return "transient"
    code = s3_error_code(exc)
    if code in NOT_FOUND_CODES:
        return "missing"
    if code in _ACCESS_CODES:
        return "access"
    status = (exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
              if isinstance(exc, bce.ClientError) else 0)
    if code in _TRANSIENT_CODES or status >= 500 or status == 429:
        return "transient"
    return "other"


def describe_s3_error(exc: BaseException, *, uri: str, endpoint: str, operation: str) -> str:
    """One clear sentence for a botocore failure: what, where, and which permission or setting."""
    where = f"{operation} {uri} (endpoint {endpoint})"
    inner = exc.__cause__ or exc.__context__
    if isinstance(exc, S3UploadFailedError) and isinstance(inner, CLIENT_ERRORS):
        exc = inner  # boto3's transfer manager wraps the real error
    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
        return (
            f"{where}: no usable AWS credentials found (looked at AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, the shared credentials and config files, "
            f"container and instance roles): {exc}"
        )
    if isinstance(exc, bce.EndpointConnectionError | bce.ConnectTimeoutError):
        return f"{where}: S3 endpoint {endpoint} is unreachable: {exc}"
    if isinstance(exc, bce.ReadTimeoutError):
        return f"{where}: S3 endpoint {endpoint} timed out: {exc}"
    code = s3_error_code(exc)
    if code is None:
        return f"{where}: {type(exc).__name__}: {exc}"
    permission = _PERMISSION.get(operation, f"s3:{operation}")
    bucket = urlparse(uri).netloc
    reasons = {
        "NoSuchBucket": f"bucket {bucket!r} does not exist",
        "AccessDenied": f"access denied: needs permission {permission}",
        "403": f"access denied (HTTP 403): needs permission {permission}",
        "AllAccessDisabled": f"access to bucket {bucket!r} is disabled",
        "InvalidAccessKeyId": "credentials rejected: the access key id is unknown to the endpoint",
        "SignatureDoesNotMatch": "credentials rejected: the secret key does not match",
        "ExpiredToken": "credentials rejected: the session token has expired",
        "InvalidToken": "credentials rejected: the session token is invalid",
        "NoSuchKey": "no such object",
        "404": "no such object (HTTP 404)",
    }
    return f"{where}: {reasons.get(code, f'{code}: {exc}')}"
