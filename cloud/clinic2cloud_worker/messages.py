"""What starts a job: a queue message naming a delivered manifest.

Two senders, one queue (``[worker] queue_name``):

* **Event Grid** (the platform's own trigger): a ``Microsoft.Storage.BlobCreated`` event
  filtered on ``manifest.json``, delivered to a Storage queue - in the Event Grid schema
  (``eventType``, ``subject`` = ``/blobServices/default/containers/<c>/blobs/<name>``) or
  as a CloudEvent (``type``, ``subject``);
* **the agent** (``[target] queue_name``): ``{"event": "clinic2cloud.manifest",
  "container": ..., "blob": ".../manifest.json", "location": ...}``; a retry asked from
  the clinic adds ``"reprocess": true``.

Both may arrive for the same manifest (and either may be duplicated): the job itself is
idempotent (:mod:`clinic2cloud_worker.job`). Messages may be base64-encoded or plain JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

MANIFEST = "manifest.json"
#: ``<site>/<patient>/<study>/<series>[.vN]``: pseudonyms made of these characters only.
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SUBJECT = re.compile(r"^/blobServices/default/containers/([a-z0-9-]{3,63})/blobs/(.+)$")


@dataclass(frozen=True)
class Job:
    """One delivery to process."""

    container: str
    location: str
    #: Asked again on purpose (a retry from the clinic): a final failure is not final.
    reprocess: bool = False


def valid_location(location: str) -> bool:
    """Whether ``location`` is a delivery path the agent could have written (4 segments of
    pseudonym characters, none of them ``.`` or ``..``)."""
    parts = location.split("/")
    return len(parts) == 4 and all(_SEGMENT.match(p) and ".." not in p for p in parts)


def _decode(text: str) -> Any:
    text = text.strip()
    if not text.startswith(("{", "[")):
        try:
            text = base64.b64decode(text, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _from_blob_name(container: str, blob: str, reprocess: bool = False) -> Job | None:
    if not blob.endswith("/" + MANIFEST):
        return None
    location = blob[: -len(MANIFEST) - 1]
    return Job(container, location, reprocess) if valid_location(location) else None


def parse(text: str) -> Job | None:
    """The job a message asks for; None for anything else (another event, a non-manifest
    blob, a malformed or hostile name)."""
    doc = _decode(text)
    if isinstance(doc, list) and len(doc) == 1:
        doc = doc[0]
    if not isinstance(doc, dict):
        return None
    if doc.get("event") == "clinic2cloud.manifest":
        container, blob = doc.get("container"), doc.get("blob")
        if isinstance(container, str) and isinstance(blob, str):
            return _from_blob_name(container, blob, doc.get("reprocess") is True)
        return None
    kind = doc.get("eventType", doc.get("type"))
    subject = doc.get("subject")
    if kind != "Microsoft.Storage.BlobCreated" or not isinstance(subject, str):
        return None
    match = _SUBJECT.match(subject)
    return _from_blob_name(match.group(1), match.group(2)) if match else None


def agent_message(container: str, location: str, *, reprocess: bool = False) -> str:
    """The agent's message for ``location`` (tests, and ``--location`` runs)."""
    doc: dict[str, Any] = {"event": "clinic2cloud.manifest", "container": container,
                           "blob": f"{location}/{MANIFEST}", "location": location}
    if reprocess:
        doc["reprocess"] = True
    return json.dumps(doc)
