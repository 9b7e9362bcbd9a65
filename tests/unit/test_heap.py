"""The run's freeze of long-lived objects: frozen while dbt runs, unfrozen after, and a
process that froze objects itself is left alone."""

import gc

from dbt_prefect.runner.heap import freeze_what_exists_now, long_lived_objects_frozen


def test_objects_are_frozen_during_the_run_and_unfrozen_after_it():
    assert gc.get_freeze_count() == 0
    with long_lived_objects_frozen():
        frozen_at_start = gc.get_freeze_count()
        assert frozen_at_start > 0
        parsed = [[i] for i in range(1000)]  # lists are tracked by the collector
        freeze_what_exists_now()
        assert gc.get_freeze_count() >= frozen_at_start + len(parsed) // 2  # some frozen ones may be freed meanwhile
        with long_lived_objects_frozen():  # a nested run keeps the outer freeze
            pass
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_an_exception_still_unfreezes():
    try:
        with long_lived_objects_frozen():
            raise RuntimeError("dbt raised")
    except RuntimeError:
        pass
    assert gc.get_freeze_count() == 0


def test_a_process_that_froze_objects_itself_is_left_as_it_is():
    gc.freeze()
    try:
        # Frozen objects that other threads release leave the count, so it can only fall.
        before = gc.get_freeze_count()
        with long_lived_objects_frozen():
            garbage = [[] for _ in range(100)]
            freeze_what_exists_now()
            assert gc.get_freeze_count() <= before  # nothing of ours was added
            del garbage
        assert 0.9 * before <= gc.get_freeze_count() <= before  # and the process's freeze stands
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0


def test_outside_a_run_freezing_what_exists_does_nothing():
    freeze_what_exists_now()
    assert gc.get_freeze_count() == 0
