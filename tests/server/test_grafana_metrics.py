"""Every Triton metric the Grafana dashboard (docker/grafana) queries exists in the real
server's /metrics, with the ``model`` label its queries select on."""

from __future__ import annotations

import re
import urllib.request

from tests.helpers import dashboard, metric_names
from tritonlens.client.clip import ClipClient


def test_dashboard_metrics_exist_on_the_real_server(server, photos):
    ClipClient(server.grpc_url, "grpc").classify(photos[0], top_k=1)  # per-model counters move
    scraped = urllib.request.urlopen(f"http://{server.host}:{server.metrics_port}/metrics",
                                     timeout=30).read().decode()
    served = set(re.findall(r"^(nv_[a-z_]+)[{ ]", scraped, re.MULTILINE))
    wanted = metric_names(dashboard())
    assert wanted <= served, f"not on the server: {sorted(wanted - served)}"
    for name in wanted:
        if name.startswith("nv_inference_"):  # the dashboard's $model variable selects on it
            assert re.search(rf'^{name}{{[^}}]*model="clip_classify"', scraped, re.MULTILINE), name
