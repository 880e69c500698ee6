"""deploy/grafana/payweave.json: valid dashboard JSON whose queries reference only metrics payweave exports, and
which has a panel for every ``payweave_`` metric (a renamed or new metric fails here, not on a dark panel).

Temporal's SDK series (``temporal_*``) exist only once Core reports them, so they cannot be listed from the
registry here: tests/e2e/test_observability.py checks that every one the dashboard queries is really served."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

import payweave.metrics  # noqa: F401 — registers payweave's metrics in the default registry

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "payweave.json"
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
    "summary": ("_sum", "_count"),
}


def exported_series() -> dict[str, str]:
    """Series name → metric family, for every payweave_ metric registered in code."""
    series: dict[str, str] = {}
    for family in REGISTRY.collect():
        if family.name.startswith("payweave_"):
            for suffix in SUFFIXES[family.type]:
                series[family.name + suffix] = family.name
    return series


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out += [panel, *panel.get("panels", [])]
    return out


def test_dashboard_shape(dashboard: dict[str, Any]) -> None:
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    assert any(v["type"] == "datasource" for v in dashboard["templating"]["list"])
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["refId"] and target["expr"].strip(), panel["title"]
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_queries_reference_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    exported = exported_series()
    assert exported, "payweave.metrics registered nothing?"
    used: set[str] = set()
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            names = set(re.findall(r"\bpayweave_[A-Za-z0-9_]+", target["expr"]))
            temporal = set(re.findall(r"\btemporal_[A-Za-z0-9_]+", target["expr"]))
            assert names or temporal, f"{panel['title']}: the query reads no payweave or Temporal metric"
            for name in temporal:  # Temporal's counters and histograms as payweave/telemetry.py serves them
                assert re.fullmatch(r"temporal_[a-z0-9_]+(_total|_bucket|_count|_sum)?", name), name
            unknown = names - exported.keys()
            assert not unknown, f"{panel['title']}: {sorted(unknown)} are not exported by payweave"
            used |= {exported[n] for n in names}
    unused = set(exported.values()) - used
    assert not unused, f"metrics without a panel: {sorted(unused)}"
