"""``clinic2cloud lookup``: which pseudonym does this Patient ID have at this site?

The very function the engine uses, so the answer always matches what was delivered.
"""

from __future__ import annotations

from agent.deid.pseudo import pseudonym_for_patient

__all__ = ["pseudonym_for_patient"]
