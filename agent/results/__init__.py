"""Results of cloud processing, back in the clinic and re-linked to the patient locally.

* :mod:`~agent.results.relink` - the encrypted re-link store (AES-256-GCM, keys from the
  site secret), filled by the ``relink`` stage (:mod:`~agent.results.hook`) when a series is
  de-identified;
* :mod:`~agent.results.service` - the poller: results container -> verified download ->
  re-identification (:mod:`~agent.results.reidentify`) -> results folder / PACS
  (:mod:`~agent.results.deliver`), every step in the ledger;
* ``[results]`` in the configuration; docs/cloud.md for the whole loop.
"""

from __future__ import annotations

from agent.config import Config
from agent.results.hook import RelinkStage
from agent.results.relink import RelinkStore


def relink_stage(cfg: Config, site_secret: bytes) -> RelinkStage:
    """The ``relink`` pipeline stage, on the agent's re-link store."""
    from agent.results.service import relink_path

    return RelinkStage(RelinkStore(relink_path(cfg), site_secret), site_secret)


__all__ = ["RelinkStage", "RelinkStore", "relink_stage"]
