"""The API's errors as exceptions: every non-2xx answer becomes a `TasqError` carrying the
contract's `code` (`invalid_argument`, `not_found`, `lease_lost`, …), its message and the
HTTP status."""

from __future__ import annotations

from typing import Any, Optional


class TasqError(Exception):
    """An error answered by the server (or the connection to it)."""

    def __init__(self, code: str, message: str, status: Optional[int] = None,
                 retry_after: Optional[float] = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after

    @classmethod
    def from_response(cls, status: int, body: Any, retry_after: Optional[str]) -> "TasqError":
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and "code" in err:
            code, message = str(err["code"]), str(err.get("message", ""))
        else:
            code, message = "http_error", f"HTTP {status} from something that is not tasq"
        after = float(retry_after) if retry_after and retry_after.isdigit() else None
        return cls(code, message, status, after)


class NonRetryable(Exception):
    """Raise from a handler to fail the task for good (it becomes a dead letter at once)."""
