"""Imported by the pool's fork server (:mod:`agent.procpool`) before it forks any worker.

Importing the stage modules and reading their shipped tables (person names, vocabularies,
the data dictionary's identifying tags, code meanings) costs about a second of CPU; done
here once, every worker forked afterwards starts with them in memory, shared copy-on-write.
Nothing here opens a file that stays open, starts a thread or touches the ledger: the
fork server must stay safe to fork.
"""

from __future__ import annotations

import importlib


def warm_tables() -> None:
    """Read the tables the stages read on their first file (each is cached per process)."""
    from agent.deid import names, variants, verify, verify_fields, verify_text, vocabulary

    verify_text.person_names()
    verify_text.read_vocabulary()
    # The text cleaner's person names, filtered by the default vocabulary: 0.14 s of CPU
    # that every worker paid on its first series.
    names.distinct_names(vocabulary.vocabulary())
    variants.identifying_tags()
    verify.field_rules()
    verify.load_safe_private()
    verify_fields._meanings()  # a cache of that module, read ahead


def _preload() -> None:
    from agent.procpool import STAGE_MODULES

    for name in STAGE_MODULES:
        importlib.import_module(name)
    warm_tables()


_preload()
