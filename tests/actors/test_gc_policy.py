"""``switchboard serve``'s garbage-collector policy (the process is the gateway's own)."""

from __future__ import annotations

import gc

from actors.cli.commands import GC_GEN0_THRESHOLD, tune_gc


def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_GEN0_THRESHOLD, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
