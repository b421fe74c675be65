"""docker/grafana: the dashboard JSON is valid Grafana JSON, its queries are well-formed
PromQL over Triton's metric names, and compose/provisioning point at the files that exist.
That every metric name exists in a real server's /metrics is checked in
tests/server/test_grafana_metrics.py."""

from __future__ import annotations

import re

import yaml

from tests.helpers import DOCKER, METRIC, dashboard, metric_names, queries


def test_dashboard_is_valid_grafana_json():
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 30
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)) and len(ids) >= 8
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "model"} <= variables
    for panel in board["panels"]:
        assert panel["type"] in ("timeseries", "stat") and panel["title"]
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys() and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))


def test_queries_are_well_formed_promql():
    for expr in queries(dashboard()):
        depth = {"(": 0, "[": 0, "{": 0}
        closing = {")": "(", "]": "[", "}": "{"}
        for char in expr:
            if char in depth:
                depth[char] += 1
            elif char in closing:
                depth[closing[char]] -= 1
                assert depth[closing[char]] >= 0, expr
        assert not any(depth.values()), expr
        assert METRIC.search(expr), f"no Triton metric in {expr!r}"
        for selector in re.findall(r"\{([^}]*)\}", expr):  # label matchers: name op "value"
            if selector and not selector.startswith("{"):  # skip legend templates
                assert re.fullmatch(r'\s*\w+\s*(=~|!~|!=|=)\s*"[^"]*"\s*', selector), selector
        # counters are only read through rate(): a raw counter graph is a rising line
        for name in METRIC.findall(expr) if not expr.startswith("label_values(") else ():
            if name.endswith(("_success", "_failure", "_count", "_us")) and "pending" not in name:
                assert re.search(rf"rate\({name}\b", expr), f"{name} without rate() in {expr!r}"


def test_dashboard_covers_requests_latency_batching_and_host():
    names = metric_names(dashboard())
    assert {"nv_inference_request_success", "nv_inference_request_failure",
            "nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us",
            "nv_inference_count", "nv_inference_exec_count", "nv_cpu_utilization",
            "nv_cpu_memory_used_bytes"} <= names


def test_compose_and_provisioning_point_at_existing_files():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    grafana = compose["services"]["grafana"]
    for volume in grafana["volumes"] + compose["services"]["prometheus"]["volumes"]:
        source = volume.split(":")[0]
        assert (DOCKER / source).exists(), source
    provider = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/tritonlens.yaml").read_text())
    mounted = [v.split(":")[1] for v in grafana["volumes"] if v.endswith(".json:ro") or ".json:" in v]
    assert any(m.startswith(provider["providers"][0]["options"]["path"]) for m in mounted)
    prometheus = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == ["triton:8002"]
