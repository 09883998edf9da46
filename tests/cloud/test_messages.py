"""Which queue messages start a job: Event Grid, CloudEvents, the agent's; nothing else."""

from __future__ import annotations

import base64
import json

import pytest

from clinic2cloud_worker.messages import Job, agent_message, parse, valid_location

LOC = "SITE1/SITE1-0A1B2C3D4E/0123456789abcdef/fedcba9876543210.v2"
SUBJECT = f"/blobServices/default/containers/deliveries/blobs/{LOC}/manifest.json"


def test_the_three_senders_and_base64() -> None:
    want = Job("deliveries", LOC)
    grid = {"eventType": "Microsoft.Storage.BlobCreated", "subject": SUBJECT, "data": {}}
    cloud_event = {"type": "Microsoft.Storage.BlobCreated", "subject": SUBJECT}
    assert parse(json.dumps(grid)) == want
    assert parse(json.dumps([grid])) == want
    assert parse(json.dumps(cloud_event)) == want
    assert parse(agent_message("deliveries", LOC)) == want
    assert parse(base64.b64encode(agent_message("deliveries", LOC).encode()).decode()) == want
    assert parse(agent_message("deliveries", LOC, reprocess=True)) == Job("deliveries", LOC,
                                                                          True)


@pytest.mark.parametrize("blob", [
    f"{LOC}/IM0001.dcm",                     # a file's BlobCreated, not the manifest
    "SITE1/../../x/manifest.json",           # escapes
    "SITE1/a/b/manifest.json",               # too short
    "SITE1/a/b/c/d/manifest.json",           # too deep
    "SITE1/a b/c/d/manifest.json",           # characters a pseudonym never has
    "SITE1/.clinic2cloud-doctor/x/y/manifest.json",
])
def test_other_blobs_and_hostile_names_start_nothing(blob: str) -> None:
    subject = f"/blobServices/default/containers/deliveries/blobs/{blob}"
    assert parse(json.dumps({"eventType": "Microsoft.Storage.BlobCreated",
                             "subject": subject})) is None


@pytest.mark.parametrize("text", ["", "{", "[]", "null", "%%%", json.dumps({"event": "x"}),
                                  json.dumps({"eventType": "Microsoft.Storage.BlobDeleted",
                                              "subject": SUBJECT})])
def test_malformed_messages_start_nothing(text: str) -> None:
    assert parse(text) is None


def test_valid_location() -> None:
    assert valid_location(LOC)
    assert not valid_location("a/b/c/..")
    assert not valid_location("a/b/c/d\x00")
