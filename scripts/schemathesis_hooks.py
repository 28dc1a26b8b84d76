"""Checks schemathesis adds to its own when `scripts/faults.sh` runs it on the broker.

Loaded through SCHEMATHESIS_HOOKS=schemathesis_hooks (with scripts/ on PYTHONPATH).
"""

import json

import schemathesis


@schemathesis.check
def errors_are_json(ctx, response, case):
    """Every error answer is JSON: {"error": {"code": ..., "message": ...}}."""
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
    if not isinstance(error, dict) or not error.get("code") or not error.get("message"):
        raise AssertionError(f"{response.status_code} body lacks error.code/error.message: {body!r}")
    return None
