"""Identifiers.

Resource ids of sagas are *derived* from the workflow id (itself derived from the caller's
Idempotency-Key), never random: a retried or concurrent duplicate request computes the same id.
"""

from __future__ import annotations

import hashlib
import uuid


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def derived_id(prefix: str, workflow_id: str) -> str:
    return f"{prefix}_{hashlib.sha256(workflow_id.encode()).hexdigest()[:26]}"


def workflow_id(kind: str, owner: str, idempotency_key: str) -> str:
    """``<kind>:<owner>:<key>`` — ARCHITECTURE §4: one key end to end."""
    return f"{kind}:{owner}:{idempotency_key}"


def step_key(wf_id: str, step: str, n: int | None = None) -> str:
    """``<workflow id>:<step>[:<n>]`` — the key every money-moving activity writes under."""
    return f"{wf_id}:{step}" if n is None else f"{wf_id}:{step}:{n}"
