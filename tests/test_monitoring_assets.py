"""Shipped dashboards and alert rules: promtool checks them, and every metric they query is one the
exporter really emits for a running (stand-in) daemon."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_exporter import daemon, scrape  # noqa: F401  (the stand-in daemon fixture)

MON = Path(__file__).resolve().parents[1] / "monitoring"
METRIC = re.compile(r"\bbot4d_[a-z0-9_]+")

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")


@needs_promtool
def test_alert_rules_pass_promtool_check_and_their_unit_tests():
    r = subprocess.run(["promtool", "check", "rules", str(MON / "prometheus/alerts.yml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["promtool", "test", "rules", "alerts.test.yml"], cwd=MON / "prometheus",
                       capture_output=True, text=True)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def _dashboard_exprs() -> list[str]:
    dash = json.loads((MON / "grafana/dashboards/bot4d.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def test_dashboard_and_alerts_query_only_exported_metrics(daemon):  # noqa: F811
    inst, _ = daemon
    exported = {name for name, _ in scrape(inst)}
    exprs = _dashboard_exprs() + re.findall(r"expr: (.+)", (MON / "prometheus/alerts.yml").read_text())
    used = {m for e in exprs for m in METRIC.findall(e)}
    assert len(used) >= 15
    missing = sorted(used - exported)
    assert not missing, f"queried but never exported: {missing}"


def test_alerts_cover_the_required_conditions():
    text = (MON / "prometheus/alerts.yml").read_text()
    for alert in ("Bot4dFeedStale", "Bot4dBookNotLive", "Bot4dKillSwitchTripped", "Bot4dBreakerOpen",
                  "Bot4dJournalLag", "Bot4dDown"):
        assert f"alert: {alert}" in text


def test_grafana_provisioning_points_at_the_dashboard_folder():
    dash = json.loads((MON / "grafana/dashboards/bot4d.json").read_text())
    assert dash["uid"] == "bot4d-overview" and len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    prov = (MON / "grafana/provisioning/dashboards/bot4d.yml").read_text()
    assert "type: file" in prov and "path:" in prov
