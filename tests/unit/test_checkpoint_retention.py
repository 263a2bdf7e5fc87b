"""Which of a local run's checkpoints stay: checkpoint_storage.save_trial_best/latest."""

from __future__ import annotations

import pytest

from bert_glue.trial import checkpointing
from constants import ConfigError

CHECKPOINTS = [(6, "a"), (12, "b"), (18, "c"), (24, "d")]
VALIDATIONS = [(6, {"acc": 0.7}), (12, {"acc": 0.8}), (18, {"acc": 0.8}), (24, {"acc": 0.6})]


def retention(smaller_is_better=False, **storage) -> checkpointing.Retention:
    searcher = {"metric": "acc", "smaller_is_better": smaller_is_better}
    return checkpointing.Retention.of({"searcher": searcher, "checkpoint_storage": storage})


def test_determineds_defaults_keep_the_best_and_the_last():
    assert checkpointing.Retention.of({"searcher": {"metric": "acc"}}).best == 1
    kept = retention().kept(CHECKPOINTS, VALIDATIONS)
    assert kept == {"b", "d"}  # the first of equals is the best, as the summary says


def test_counts_and_direction_are_the_configs():
    assert retention(save_trial_best=2, save_trial_latest=2).kept(CHECKPOINTS, VALIDATIONS) == {
        "b",
        "c",
        "d",
    }
    assert retention(True, save_trial_latest=None).kept(CHECKPOINTS, VALIDATIONS) == {"d"}
    assert retention(save_trial_latest=100).kept(CHECKPOINTS, VALIDATIONS) == set("abcd")
    # None kept is read as the last: --resume continues from it.
    assert retention(save_trial_best=0, save_trial_latest=0).kept(CHECKPOINTS, VALIDATIONS) == {"d"}


def test_a_checkpoint_without_a_validation_or_a_number_is_never_best():
    validations = [(6, {"acc": float("nan")}), (18, {"loss": 0.1})]
    assert retention().kept(CHECKPOINTS, validations) == {"d"}


def test_a_bad_count_names_its_key():
    with pytest.raises(ConfigError, match=r"checkpoint_storage.save_trial_best: .* got -1"):
        retention(save_trial_best=-1)


def test_prune_deletes_the_rest_from_local_storage_only(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    storage = checkpointing.storage_dir()
    for name in ("a", "b", "c", "d", "another-run"):
        (storage / name).mkdir(parents=True)
        (storage / name / "metadata.json").write_text("{}")
    assert checkpointing.prune(CHECKPOINTS, VALIDATIONS, retention()) == ["a", "c"]
    assert sorted(p.name for p in storage.iterdir()) == ["another-run", "b", "d"]
