"""Which failures a retry can fix. Connection drops, lock timeouts and the like are retried with
exponential backoff; a missing table, a schema change, a failed dbt test or bad data fail at once,
with the reason, so nobody waits through retries that cannot succeed."""

from __future__ import annotations

from typing import Any

from airflow.sdk import RetryPolicy
from airflow.sdk.definitions.retry_policy import RetryDecision

# Words that mark a failure a retry cannot fix, in the messages our own code and dbt write.
PERMANENT_MARKERS = (
    "does not exist",  # a missing source table or relation
    "no longer matches",  # schema drift between source and staging
    "failure in test",  # a dbt data test found bad rows
    "tests for model",  # Cosmos reporting failed tests of a model
    "compilation error",  # dbt SQL or YAML that cannot compile
    "rejected rows over the threshold",
    "is empty: a shop never loses",  # an emptied source table; the previous copy is kept
    "parsing error",
)
# Words that settle it even when the message quotes a transient error: the source sensor spent its
# whole wait on "connection refused", and a retry would only wait as long again.
FINAL_MARKERS = ("source not ready after waiting", "warehouse still busy after waiting")
# Words that mark a transient failure even inside a message that also names a permanent one.
TRANSIENT_MARKERS = (
    "could not connect",
    "connection refused",
    "connection timed out",
    "server closed the connection",
    "terminating connection",
    "lock timeout",
    "deadlock detected",
    "canceling statement due to lock timeout",
    "the database system is starting up",
    "too many clients",
)


def is_permanent(error_text: str) -> bool:
    text = error_text.lower()
    if any(marker in text for marker in FINAL_MARKERS):
        return True
    if any(marker in text for marker in TRANSIENT_MARKERS):
        return False
    return any(marker in text for marker in PERMANENT_MARKERS)


class RetryOnlyTransientFailures(RetryPolicy):
    def evaluate(self, exception: BaseException, try_number: int, max_tries: int, context=None) -> RetryDecision:
        text = f"{type(exception).__name__}: {exception}"
        if is_permanent(text):
            first_line = text.strip().splitlines()[0][:300]
            return RetryDecision.fail(reason=f"not retried, a retry cannot fix it: {first_line}")
        return RetryDecision.default()

    def serialize(self) -> dict[str, Any]:
        return {}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> RetryOnlyTransientFailures:
        return cls()
