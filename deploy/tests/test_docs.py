"""The runbook covers every alert and its commands are real; the ADRs exist in shape."""

from __future__ import annotations

import re
import shlex

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
