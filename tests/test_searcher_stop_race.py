"""A cluster trial whose master decides to stop it a moment after the validation report, as a
real master does when the report reaches it late: the trial stops at a batch soon after, on
every rank at the same batch, instead of at its next boundary.

Each test runs model_def.py (or distributed.yaml's launcher) as tests/test_cluster.py does. The
trial validates at batch 0 (perform_initial_validation) and next reports at batch 600; the
stand-in master takes 0.2 s to decide on the validation, then stops the trial.
"""

from __future__ import annotations

import re

import pytest
from test_cluster import DISTRIBUTED, SINGLE, expanded_config, stopped_trial

NEXT_BOUNDARY = 600  # batches: the trial's next validation, checkpoint and report


@pytest.mark.parametrize(
    ("command", "slots"), [(SINGLE, 1), (DISTRIBUTED, 2)], ids=["1-process", "2-processes"]
)
def test_a_stop_decided_after_the_chief_asked_ends_the_trial_at_a_batch_soon_after(
    command, slots, tiny_model_dir, glue_dir, tmp_path
):
    config = expanded_config(tiny_model_dir, glue_dir, tmp_path / "storage", epochs=200)
    config.update(
        perform_initial_validation=True,
        min_validation_period={"batches": NEXT_BOUNDARY},
        min_checkpoint_period={"batches": NEXT_BOUNDARY},
        scheduling_unit=NEXT_BOUNDARY,
    )
    master, output = stopped_trial(tmp_path, config, command, slots, decision_delay_s=0.2)
    assert [m["stepsCompleted"] for m in master.metrics("validation")] == [0]
    assert master.last_reported_batch() == 0  # it never reached its next boundary
    assert master.stop_answered_at == 0 and master.checkpoints() == []
    assert output.count("the master has the trial STATE_STOPPING_COMPLETED: stopping") == 1
    exits = re.findall(r"the searcher stopped the trial: exiting after (\d+) batches", output)
    assert len(exits) == slots and len(set(exits)) == 1  # every rank, at the same batch
    assert 0 <= int(exits[0]) < NEXT_BOUNDARY
