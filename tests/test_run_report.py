"""mirror --report: each tag's outcome, digests, bytes and sources, and what failed (class,
message, exit code), so a CI job can retry exactly that; the same report in --progress json."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import occystrap, ok
from tests.support import artifacts, images
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import Entry
from tests.support.registry import Registry


def test_report_of_a_run_with_a_failure(registry: Registry, tmp_path: Path) -> None:
    good = images.build_image([[Entry.file("good", b"good\n" * 1000)]])
    bad = images.build_image([[Entry.file("bad", b"bad\n" * 1000)]])
    registry.push_image("report/good", "v1", good)
    registry.push_image("report/good", "v2", good)
    registry.push_image("report/bad", "v1", bad)
    signed = artifacts.runnable_subject("report")
    registry.push_image("report/good", "v3", signed)
    artifacts.cosign("sig", signed).push(registry, "report/good", artifacts.cosign_tag(signed, "sig"))
    dest = tmp_path / "m"
    report = tmp_path / "report.json"
    with FaultProxy(registry.url) as proxy:
        proxy.add(Fault(match=bad.layers[0].digest, flip_at=20, times=None))
        spec = tmp_path / "s.yaml"
        spec.write_text(
            f"images:\n  - name: {proxy.host}/report/good\n    include: ['.*']\n"
            f"  - name: {proxy.host}/report/bad\n    tags: [v1]\n"
        )
        proc = occystrap(
            "mirror", "--progress", "json", "--keep-going", "--report", str(report), str(spec), str(dest)
        )
        assert proc.returncode == 1
        doc = json.loads(report.read_text())
        again_path = tmp_path / "again.json"
        ok("mirror", "-q", "--report", str(again_path), "--image", f"{proxy.host}/report/good:v1", str(dest))
    good_name, bad_name = f"{proxy.host}/report/good", f"{proxy.host}/report/bad"
    tags = doc["images"][good_name]
    assert tags["v1"]["outcome"] == "fetched" and tags["v1"]["digests"] == {
        "linux/amd64": good.manifest_digest
    }
    assert tags["v1"]["bytes"] == good.layers[0].size
    assert tags[artifacts.cosign_tag(signed, "sig")]["outcome"] == "artifact"
    assert doc["images"][bad_name]["v1"]["outcome"] == "failed"
    assert doc["failed"] == [
        {"image": bad_name, "error": "IntegrityError", "message": doc["failed"][0]["message"], "exit_code": 6}
    ]
    assert doc["ok"] is False and bad.layers[0].digest in doc["failed"][0]["message"]
    # The same report is a line of --progress json, before the Summary.
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert next(e for e in events if e["event"] == "RunReport")["report"] == doc
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["ok"] and again["images"][good_name]["v1"]["outcome"] == "unchanged"
