"""The runbook covers every alert and its commands are real; the ADRs exist in shape."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from support import ROOT, rule_groups, run

RUNBOOK = ROOT / "docs" / "runbook-mttr.md"
ADRS = ["0001-sans-io-core.md", "0002-quic-mutual-tls.md", "0003-link-state-routing.md",
        "0004-metric-names.md"]


def alerts() -> list[dict]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings."""
    return {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", markdown, re.M)}


def test_every_alert_links_to_a_runbook_section():
    text = RUNBOOK.read_text()
    found = anchors(text)
    assert len(alerts()) >= 8
    for alert in alerts():
        assert alert["alert"] in text, f"{alert['alert']} not in the runbook"
        links = re.findall(r"docs/runbook-mttr\.md#([a-z0-9-]+)", alert["annotations"]["description"])
        assert links and set(links) <= found, (alert["alert"], links)
    sections = {h for h in re.findall(r"^## (X0tta6bl4\w+)$", text, re.M)}
    assert sections <= {a["alert"] for a in alerts()}, "a section for an alert that does not exist"


def test_every_alert_has_a_runbook_url_resolving_to_a_runbook_section():
    """Alertmanager links `runbook_url`: each is the base (the runbook's path in this
    repository) and an anchor that GitHub makes of an existing heading, the alert's own."""
    found = anchors(RUNBOOK.read_text())
    for alert in alerts():
        url = alert["annotations"].get("runbook_url")
        assert url, f"{alert['alert']} has no runbook_url"
        base, _, anchor = url.partition("#")
        assert base == "docs/runbook-mttr.md" and (ROOT / base).is_file(), (alert["alert"], url)
        assert anchor in found, (alert["alert"], url, "no such heading")
        assert anchor in alert["annotations"]["description"], (alert["alert"], "description links elsewhere")


def test_the_runbook_base_can_be_changed_for_every_alert_at_once():
    import importlib.util
    path = ROOT / "deploy" / "monitoring" / "prometheus" / "runbook_base.py"
    spec = importlib.util.spec_from_file_location("runbook_base", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    source = (ROOT / "deploy" / "monitoring" / "prometheus" / "x0tta6bl4-rules.yml").read_text()
    base = "https://git.example.org/ops/x0tta6bl4/blob/main/docs/runbook-mttr.md"
    rebased = module.rebase(source, base + "/")
    assert len(rebased) == len(source) + len(alerts()) * (len(base) - len("docs/runbook-mttr.md"))
    urls = re.findall(r'runbook_url: "([^"]+)"', rebased)
    assert len(urls) == len(alerts()) and all(u.startswith(base + "#") for u in urls)
    for bad in ("", 'x"y', "a#b"):
        with pytest.raises(ValueError):
            module.rebase(source, bad)
    with pytest.raises(ValueError, match="no runbook_url"):
        module.rebase("groups: []\n", base)
    cli = subprocess.run(["python3", str(path), base], input=source, capture_output=True,
                         text=True, timeout=30)
    assert cli.returncode == 0 and cli.stdout == module.rebase(source, base), cli.stderr
    usage = subprocess.run(["python3", str(path)], input=source, capture_output=True, text=True,
                           timeout=30)
    assert usage.returncode == 2 and "BASE_URL" in usage.stderr


def commands(markdown: str) -> list[list[str]]:
    """`x0tta6bl4 ...` command lines of the sh code blocks."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", markdown, re.S):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("x0tta6bl4 "):
                found.append(shlex.split(line)[1:])
    return found


@pytest.mark.parametrize("document", ["docs/runbook-mttr.md", "deploy/README.md"])
def test_documented_commands_exist(document):
    found = commands((ROOT / document).read_text())
    assert found, f"no x0tta6bl4 commands in {document}"
    for words in found:
        path = []
        for word in words:
            if word.startswith("-"):
                break
            path.append(word)
            if run(*path, "--help", check=False).returncode != 0:
                path.pop()
                break
        assert path, words
        help_text = run(*path, "--help").stdout
        for flag in (w.split("=")[0] for w in words if w.startswith("--")):
            assert re.search(rf"{re.escape(flag)}\b", help_text), f"{' '.join(words)}: {flag} unknown"
        if "--topology" in words:
            kind = words[words.index("--topology") + 1].split(":")[0]
            assert kind in help_text, f"topology kind {kind}"
        if "--scenario" in words:
            name = words[words.index("--scenario") + 1].split(":")[0]
            assert name in help_text, f"scenario {name}"


@pytest.mark.parametrize("name", ADRS)
def test_adr_has_context_decision_consequences(name):
    text = (ROOT / "docs" / "adr" / name).read_text()
    assert re.match(r"# ADR \d{4}: ", text)
    for section in ("## Context", "## Decision", "## Consequences"):
        assert section in text, f"{name}: {section}"
