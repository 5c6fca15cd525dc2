"""Schemathesis hooks for tests/api/contract.rs: the rules of the API that JSON Schema cannot state.

The OpenAPI document states every rule a schema can hold (lengths, patterns, enums, ranges); the rules
below compare two values, depend on the clock or count bytes rather than characters, so the document
states them in descriptions only. Without these hooks schemathesis would build "valid" requests that
the server rightly refuses with 400. Each hook changes only positive cases (those meant to be valid),
and each keeps the case valid by the schema; negative cases are left as generated, so every invalid
request must still be refused.

The rules, each stated in the description of its field or parameter:
- `from` must be before `to`; `sentimentMin` not above `sentimentMax`.
- a summary spans at most 1000 buckets of its `interval` (`query_max_buckets`).
- `cursor` is only ever a `pagination.nextCursor` the API returned; any other value is refused.
- an interaction's `timestamp` is not in the future.
- a password is at most 72 bytes of UTF-8, an email at most 254 once trimmed and lowercased, and a
  new password differs from the current one.
- free-form objects (`metadata`, `attributes`) hold no control character but tab, line feed and
  carriage return, in any key or text.

Two more hooks serve the test rather than the API. Half of the new interactions name a customer the
test created (`CONTRACT_CUSTOMER_ID`), so that storing one is exercised, not only "unknown customer".
And the caller's own user (`CONTRACT_OWN_USER_ID`) is never changed or deleted: a new role or password
ends a user's sessions, by design, and the run needs its session. Such requests are not sent.
"""

import copy
import os
from datetime import datetime, timedelta, timezone

import schemathesis

MAX_BUCKETS = 1000
INTERVALS = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}
DEFAULT_RANGE = timedelta(days=30)
PASSWORD_MAX_BYTES = 72
EMAIL_MAX_BYTES = 254
# What Rust's `str::trim` removes (Unicode White_Space).
WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"

FILTERED = {"/api/v1/interactions", "/api/v1/export/interactions", "/api/v1/insights/dashboard", "/api/v1/insights/trends"}
SUMMARIES = {"/api/v1/insights/dashboard", "/api/v1/insights/trends"}


def is_positive(case):
    meta = case.meta
    return meta is None or meta.generation.mode.is_positive


def blank(value):
    return value is None or (isinstance(value, str) and value.strip(WHITESPACE) == "")


def parse_time(value):
    if blank(value) or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip(WHITESPACE))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def number(value):
    if blank(value) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def rfc3339(t):
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def fix_filters(path, query):
    start, end = parse_time(query.get("from")), parse_time(query.get("to"))
    if start is not None and end is not None and start >= end:
        if start == end:
            del query["from"]
            start = None
        else:
            query["from"], query["to"] = query["to"], query["from"]
            start, end = end, start
    low, high = number(query.get("sentimentMin")), number(query.get("sentimentMax"))
    if low is not None and high is not None and low > high:
        query["sentimentMin"], query["sentimentMax"] = query["sentimentMax"], query["sentimentMin"]
    if path in SUMMARIES:
        fix_buckets(path, query, start, end)
    if path == "/api/v1/interactions":
        query.pop("cursor", None)


def fix_buckets(path, query, start, end):
    """Moves `from` closer to `to` when the range holds more buckets than a summary may have."""
    try:
        end = end or datetime.now(timezone.utc)
        start = start or end - DEFAULT_RANGE
    except OverflowError:
        return
    if start >= end:
        return
    span = end - start
    name = query.get("interval")
    if blank(name):
        if path.endswith("/dashboard"):
            name = "hour" if span <= timedelta(days=2) else "day" if span <= timedelta(days=90) else "week"
        else:
            name = "day" if span // INTERVALS["day"] + 2 <= MAX_BUCKETS else "week"
    length = INTERVALS.get(name.strip(WHITESPACE))
    if length is None or span // length + 2 <= MAX_BUCKETS:
        return
    try:
        # One bucket to spare: without `to`, the server's "now" comes a little later than ours.
        query["from"] = rfc3339(end - length * (MAX_BUCKETS - 3))
    except OverflowError:
        return


def not_in_future(body):
    at = parse_time(body.get("timestamp"))
    if at is not None and at > datetime.now(timezone.utc) - timedelta(minutes=1):
        # 2000 is a leap year, so the month and day stay a valid date.
        body["timestamp"] = "2000" + body["timestamp"].strip(WHITESPACE)[4:]


def short_password(value):
    if not isinstance(value, str):
        return value
    while len(value.encode()) > PASSWORD_MAX_BYTES:
        value = value[:-1]
    return value


def short_email(value):
    if isinstance(value, str) and len(value.strip(WHITESPACE).lower().encode()) > EMAIL_MAX_BYTES:
        return "someone@example.com"
    return value


# The control characters free text may not hold (Unicode Cc but tab, line feed, carriage return).
REFUSED_CONTROLS = {c: None for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0)]}


def without_controls(value):
    if isinstance(value, str):
        return value.translate(REFUSED_CONTROLS)
    if isinstance(value, list):
        return [without_controls(v) for v in value]
    if isinstance(value, dict):
        return {without_controls(k): without_controls(v) for k, v in value.items()}
    return value


def fix_body(path, body):
    if "email" in body:
        body["email"] = short_email(body["email"])
    for name in ("password", "newPassword"):
        if name in body and path != "/api/v1/auth/login":
            body[name] = short_password(body[name])
    if path == "/api/v1/auth/password" and body.get("newPassword") == body.get("currentPassword"):
        if isinstance(body.get("newPassword"), str):
            body["newPassword"] = short_password(body["newPassword"] + "!")
            if body["newPassword"] == body.get("currentPassword"):
                body["newPassword"] = body["newPassword"][:-1] + ("a" if body["newPassword"][-1] != "a" else "b")
    for name in ("metadata", "attributes"):
        if name in body:
            body[name] = without_controls(body[name])
    if path == "/api/v1/interactions":
        not_in_future(body)
        # Half of the ids (chosen by the data, so runs repeat) become the known customer's.
        customer = body.get("customerId")
        if KNOWN_CUSTOMER and isinstance(customer, str) and customer[:1] in "02468ace":
            body["customerId"] = KNOWN_CUSTOMER


OWN_USER = os.environ.get("CONTRACT_OWN_USER_ID", "").lower()
# A customer that exists, so that ingestion is exercised beyond "unknown customer" (404).
KNOWN_CUSTOMER = os.environ.get("CONTRACT_CUSTOMER_ID", "")


def targets_own_user(case):
    if case.operation.path != "/api/v1/users/{id}" or case.method.upper() not in ("PATCH", "DELETE"):
        return False
    params = case.path_parameters or {}
    return bool(OWN_USER) and str(params.get("id", "")).strip().lower() == OWN_USER


@schemathesis.hook
def filter_case(context, case):
    return not targets_own_user(case)


@schemathesis.hook
def map_case(context, case):
    if not is_positive(case):
        return case
    path = case.operation.path
    # Copies: the generated values may be shared with other cases.
    if path in FILTERED and isinstance(case.query, dict):
        case.query = dict(case.query)
        fix_filters(path, case.query)
    if isinstance(case.body, dict):
        case.body = copy.deepcopy(case.body)
        fix_body(path, case.body)
    return case
