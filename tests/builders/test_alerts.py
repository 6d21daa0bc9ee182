"""GEO's alerting rules: the shipped file is the generated one, Prometheus' own promtool
accepts it, and its unit tests (tests/builders/alerts/geo-alerts.test.yaml) fire and
clear each alert on the series the operator and Triton export."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

import pytest
import yaml
from tests.support.series import exported_series, series_read

from geo_operator.builders import alerts

ROOT = pathlib.Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "geo-operator" / "files" / "geo-alerts.rules.yaml"
PROMTOOL_TESTS = pathlib.Path(__file__).parent / "alerts" / "geo-alerts.test.yaml"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed: `make setup` installs Debian's prometheus"
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120)


def test_the_shipped_rule_file_is_the_generated_one() -> None:
    assert RULES.read_text() == alerts.rule_file(), "drifted: run `make crd`"


def test_promtool_accepts_the_rules(tmp_path: pathlib.Path) -> None:
    out = _promtool("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alerts.ALERTS) + 2} rules found" in out.stdout
    # The short holds for trying them out are valid rules too.
    short = tmp_path / "short.yaml"
    short.write_text(alerts.rule_file(for_seconds=5))
    out = _promtool("check", "rules", str(short))
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests_fire_and_clear_each_alert() -> None:
    out = _promtool("test", "rules", str(PROMTOOL_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr
    tested = set(re.findall(r"alertname: (\w+)", PROMTOOL_TESTS.read_text()))
    assert tested == {a.name for a in alerts.ALERTS}  # every alert has a case


def test_promtool_tests_fail_when_a_rule_is_wrong(tmp_path: pathlib.Path) -> None:
    # The unit tests can fail: a rule file with the error limit at 1 % fails them.
    wrong = tmp_path / "rules.yaml"
    wrong.write_text(alerts.rule_file().replace("> 0.001", "> 0.01"))
    cases = yaml.safe_load(PROMTOOL_TESTS.read_text())
    cases["rule_files"] = [str(wrong)]
    test_file = tmp_path / "cases.yaml"
    test_file.write_text(yaml.safe_dump(cases))
    out = _promtool("test", "rules", str(test_file))
    assert out.returncode != 0
    assert "GeoDeploymentErrorRateHigh" in out.stdout + out.stderr


@pytest.mark.parametrize("hold", [0, 5, 90])
def test_for_seconds_replaces_every_hold(hold: int) -> None:
    rules = alerts.groups(hold)["groups"][0]["rules"]
    holds = {r.get("for") for r in rules if "alert" in r}
    assert holds == ({None} if hold == 0 else {f"{hold}s" if hold % 60 else f"{hold // 60}m"})
    shipped = {
        r["alert"]: r.get("for") for r in alerts.groups()["groups"][0]["rules"] if "alert" in r
    }
    assert shipped["GeoDeploymentP99AboveObjective"] == "5m"
    assert shipped["GeoDeploymentPinnedAtMaxReplicas"] == "10m"


def test_every_series_a_rule_reads_is_one_we_export_or_triton_does() -> None:
    known = exported_series()
    for rule in alerts.groups()["groups"][0]["rules"]:
        unknown = series_read(rule["expr"]) - known
        assert not unknown, (rule.get("alert") or rule["record"], unknown)
