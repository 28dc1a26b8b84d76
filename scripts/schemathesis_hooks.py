"""Checks schemathesis adds to its own when `scripts/faults.sh` runs it on the broker.

Loaded through SCHEMATHESIS_HOOKS=schemathesis_hooks (with scripts/ on PYTHONPATH).
"""

import json

import schemathesis

# The older single-endpoint API answers in its own shape: {"error": true, "message": ...}.
OLDER_SHAPE_PATHS = {"/handle"}


@schemathesis.check
def errors_are_json(ctx, response, case):
    """Every error answer is JSON: {"error": {"code": ..., "message": ...}}.

    `/handle`'s own refusals are {"error": true, "message": ...} instead; the rate limit
    and the deadline, which wrap every route, answer there too in the usual shape.
    """
    if response.status_code < 400:
        return None
    kind = response.headers.get("content-type", [""])
    kind = kind[0] if isinstance(kind, list) else kind
    if not kind.startswith("application/json"):
        raise AssertionError(f"{response.status_code} answered as {kind!r}, not JSON")
    try:
        body = json.loads(response.content)
    except ValueError as error:
        raise AssertionError(f"{response.status_code} body is not JSON: {error}") from None
    error = body.get("error") if isinstance(body, dict) else None
    if case.operation.path in OLDER_SHAPE_PATHS and error is True:
        if not isinstance(body.get("message"), str) or not body["message"]:
            raise AssertionError(f"{response.status_code} body lacks a message: {body!r}")
        return None
    if not isinstance(error, dict) or not error.get("code") or not error.get("message"):
        raise AssertionError(f"{response.status_code} body lacks error.code/error.message: {body!r}")
    return None
