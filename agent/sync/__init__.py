"""Delivery targets: where de-identified series go.

:class:`~agent.sync.base.Target` is the interface; :mod:`agent.sync.folder` (the embedded
default) and :mod:`agent.sync.azure` implement it. :func:`open_target` picks one from the
config.
"""

from __future__ import annotations

from agent.config import Config
from agent.sync.base import Delivery, DeliveryFile, Receipt, Target


def open_target(cfg: Config) -> Target:
    """The target named by ``[target] kind``."""
    if cfg.target.kind == "azure":
        from agent.sync.azure import AzureTarget

        return AzureTarget(cfg)
    from agent.sync.folder import FolderTarget

    return FolderTarget(cfg.target.path, group_readable=cfg.target.group_readable)


__all__ = ["Delivery", "DeliveryFile", "Receipt", "Target", "open_target"]
