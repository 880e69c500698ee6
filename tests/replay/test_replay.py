"""QUALITY R7 / I6: every checked-in history replays against today's workflow code."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workers.main import workflow_runner
from workers.registry import WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


pytestmark = pytest.mark.reliability  # QUALITY.md case, see docs/reliability.md


def test_there_are_histories_for_every_workflow() -> None:
    names = {p.stem.split("_")[0] for p in HISTORIES}
    assert {
        "deposit",
        "transfer",
        "checkout",
        "refund",
        "groupbuy",
        "groupbuypayment",
        "bulkrefund",
        "sweeper",
        "reconciliation",
    } <= names


@pytest.mark.parametrize("sandboxed", [True, False], ids=["sandboxed", "unsandboxed"])
@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path, sandboxed: bool) -> None:
    """Every recorded history replays under the sandbox (development, tests) and without it (production,
    PAYWEAVE_WORKFLOW_SANDBOX=false)."""
    # A workflow that derives ids from its own (a child's id, say) replays under the id it ran with.
    id_file = path.with_suffix(".workflow_id")
    wf_id = id_file.read_text().strip() if id_file.exists() else path.stem
    history = WorkflowHistory.from_json(wf_id, path.read_text())
    replayer = Replayer(
        workflows=list(WORKFLOWS),
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(sandboxed),
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name} no longer replays: {result.replay_failure}"


async def test_a_reordered_workflow_fails_replay() -> None:
    """The replay check has teeth: moving a step (credit before the record) is caught as non-determinism."""
    from tests.replay.reordered import ReorderedTransferWorkflow

    path = next(p for p in HISTORIES if p.stem == "transfer_completed")
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=[ReorderedTransferWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None
