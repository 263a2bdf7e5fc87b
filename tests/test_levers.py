"""The speed levers compute what the plain path computes, within numerical tolerance."""

from __future__ import annotations

import itertools
import logging

import pytest
import torch
from conftest import built_trial
from determined import pytorch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

import constants
import data
import model_def
from bert_glue.local import local_run
from bert_glue.trial import batching, device, fast_dropout, levers, settings
from bert_glue.trial.levers import Levers


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def mrpc(tokenizer, glue_dir) -> data.GlueDataset:
    task = constants.TASKS["MRPC"]
    return data.GlueDataset(
        data.featurize(data.read_examples(task, task.train, glue_dir), tokenizer, 32)
    )


@pytest.fixture(scope="module")
def no_dropout_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model without dropout, whose random masks depend on the padded shape."""
    path = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    config = BertConfig.from_pretrained(tiny_model_dir)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    BertForSequenceClassification.from_pretrained(tiny_model_dir, config=config).save_pretrained(
        path
    )
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k != "split"}


@pytest.fixture
def eval_model(tiny_model_dir) -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2).eval()


def test_dynamic_padding_gives_the_logits_of_full_padding(eval_model, tokenizer, mrpc):
    items = [mrpc[i] for i in range(16)]
    dynamic = batching.Collator(tokenizer, with_token_types=True)(items)
    full = batching.Collator(tokenizer, with_token_types=True, pad_to=32)(items)
    assert dynamic["input_ids"].shape[1] < 32
    with torch.no_grad():
        a, b = eval_model(**model_inputs(dynamic)), eval_model(**model_inputs(full))
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.loss, b.loss, atol=1e-6, rtol=1e-6)


def test_rounded_padding_gives_the_logits_of_the_longest_row(eval_model, tokenizer, mrpc):
    items = [mrpc[i] for i in range(16)]
    longest = batching.Collator(tokenizer, with_token_types=True)(items)
    rounded = batching.Collator(tokenizer, with_token_types=True, multiple_of=8)(items)
    assert rounded["input_ids"].shape[1] % 8 == 0
    assert rounded["input_ids"].shape[1] > longest["input_ids"].shape[1]
    with torch.no_grad():
        a, b = eval_model(**model_inputs(longest)), eval_model(**model_inputs(rounded))
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)


def test_eager_attention_gives_the_logits_and_gradients_of_sdpa(
    no_dropout_model_dir, tokenizer, mrpc
):
    """attn_implementation auto picks eager attention on CPUs, with fast dropout: the same
    model as SDPA's."""
    collate = batching.Collator(tokenizer, with_token_types=True, multiple_of=8)
    batch = model_inputs(collate([mrpc[i] for i in range(16)]))
    runs = {}
    for name in ("sdpa", "eager", fast_dropout.FAST_DROPOUT_ATTENTION):
        torch.manual_seed(0)
        model = BertForSequenceClassification.from_pretrained(
            no_dropout_model_dir, num_labels=2, attn_implementation=name.split("_")[0]
        )
        if name == fast_dropout.FAST_DROPOUT_ATTENTION:
            fast_dropout.use_fast_dropout(model)
        assert model.config._attn_implementation == name
        out = model(**batch)
        out.loss.backward()
        runs[name] = out.logits, [p.grad for p in model.parameters()]
    for name in ("eager", fast_dropout.FAST_DROPOUT_ATTENTION):
        torch.testing.assert_close(runs["sdpa"][0], runs[name][0], atol=1e-5, rtol=1e-5)
        for a, b in zip(runs["sdpa"][1], runs[name][1], strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_dataloader_workers_give_the_same_batches(local_config):
    """dataloader_workers batch in other processes; the batches are the same as in-process."""
    batches = []
    for workers in (0, 2):
        local_config["hyperparameters"]["dataloader_workers"] = workers
        with local_run.local_context(local_config) as context:
            trial = built_trial(context)
            loader = trial.build_training_data_loader().get_data_loader(repeat=True)
            assert loader.num_workers == workers
            batches.append(list(itertools.islice(loader, 7)))  # more than one epoch
    for a, b in zip(*batches, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_dynamic_padding_trains_like_full_padding(local_config, no_dropout_model_dir):
    """The whole trial, padded per batch or to max_seq_length: the same run, to rounding."""
    local_config["data"]["model_name_or_path"] = str(no_dropout_model_dir)
    local_config["hyperparameters"].update(precision="fp32", group_by_length=False)
    runs = []
    for pad in (False, True):
        local_config["hyperparameters"]["pad_to_max_length"] = pad
        runs.append(local_run.run_local(model_def.run, local_config)[-1])
    assert runs[0]["validation_loss"] == pytest.approx(runs[1]["validation_loss"], rel=1e-4)
    assert runs[0]["acc"] == runs[1]["acc"]


def test_bf16_autocast_loss_is_close_to_fp32(tiny_model_dir, tokenizer, mrpc):
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2).eval()
    batch = model_inputs(batching.Collator(tokenizer, True)([mrpc[i] for i in range(32)]))
    with torch.no_grad():
        fp32 = model(**batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(**batch)
    assert bf16.logits.dtype == torch.bfloat16  # autocast did run the layers in bf16
    torch.testing.assert_close(bf16.logits.float(), fp32.logits, atol=3e-2, rtol=3e-2)
    assert bf16.loss.item() == pytest.approx(fp32.loss.item(), rel=1e-2)


def test_bf16_trial_trains_like_fp32(local_config):
    runs = []
    for precision in ("fp32", "bf16"):
        local_config["hyperparameters"]["precision"] = precision
        runs.append(local_run.run_local(model_def.run, local_config)[-1])
    assert runs[1]["validation_loss"] == pytest.approx(runs[0]["validation_loss"], rel=5e-2)


def length_grouped(lengths: torch.Tensor, seed: int = 3) -> batching.LengthGroupedBatchSampler:
    return batching.LengthGroupedBatchSampler(lengths, batch_size=8, seed=seed, group_batches=4)


LENGTHS = torch.randint(5, 120, (203,), generator=torch.Generator().manual_seed(0))


def test_length_grouped_batches_hold_every_index_once_per_pass():
    sampler = length_grouped(LENGTHS)
    passes = [list(sampler) for _ in range(2)]
    for batches in passes:
        assert len(batches) == len(sampler) == 26  # 203 / 8, rounded up
        assert sorted(i for b in batches for i in b) == list(range(203))
        assert all(len(b) <= 8 for b in batches)
    assert passes[0] != passes[1]  # every pass is shuffled anew

    def padded(batches):
        return sum(len(b) * max(LENGTHS[b]) for b in batches)

    shuffled = torch.randperm(203, generator=torch.Generator().manual_seed(1)).split(8)
    assert padded(passes[0]) < 0.8 * padded([b.tolist() for b in shuffled])


def test_length_grouped_batches_are_deterministic_for_a_seed():
    def two_passes(seed):
        sampler = length_grouped(LENGTHS, seed)
        return [list(sampler) for _ in range(2)]

    assert two_passes(3) == two_passes(3)
    assert two_passes(3) != two_passes(4)


def batches_of(loader) -> list[list[int]]:
    return [batch.tolist() for batch in loader]


def test_length_grouped_batches_shard_and_resume_through_determined():
    """Determined deals whole batches to ranks in turn and skips them on resume, seed-stable."""
    dataset = list(range(len(LENGTHS)))  # each example is its own index

    def loader(**kwargs):
        return pytorch.DataLoader(dataset, batch_sampler=length_grouped(LENGTHS)).get_data_loader(
            **kwargs
        )

    whole = batches_of(loader())
    shards = [batches_of(loader(num_replicas=2, rank=rank)) for rank in (0, 1)]
    assert shards[0] == whole[0::2] and shards[1] == whole[1::2]
    assert sorted(i for shard in shards for b in shard for i in b) == dataset

    # A restart after 33 batches (past the first pass) goes on where the first run was.
    uninterrupted = batches_of(itertools.islice(loader(repeat=True), 60))
    resumed = batches_of(itertools.islice(loader(repeat=True, skip=33), 27))
    assert resumed == uninterrupted[33:]


def test_compiled_trial_trains_like_eager(local_config, no_dropout_model_dir, monkeypatch):
    """torch_compile captures the same computation (aot_eager: inductor's codegen takes minutes)."""
    compiled = []
    real_compile = torch.compile

    def compile_aot_eager(model, **kwargs):
        compiled.append(model)
        return real_compile(model, **{**kwargs, "backend": "aot_eager"})

    monkeypatch.setattr(torch, "compile", compile_aot_eager)
    monkeypatch.setitem(device.PROBES, "inductor", lambda levers, on: None)
    local_config["data"]["model_name_or_path"] = str(no_dropout_model_dir)
    local_config["hyperparameters"].update(num_train_epochs=1, precision="fp32")
    runs = []
    for torch_compile in (False, True):
        local_config["hyperparameters"]["torch_compile"] = torch_compile
        runs.append(local_run.run_local(model_def.run, local_config)[-1])
    assert len(compiled) == 1
    assert runs[1]["validation_loss"] == pytest.approx(runs[0]["validation_loss"], rel=1e-4)


@pytest.mark.parametrize("native_bf16", [True, False])
def test_auto_levers_on_cpus(local_config, monkeypatch, native_bf16):
    """auto: bf16 autocast where the CPU runs it natively, fp32 elsewhere; fused AdamW on CPUs."""
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: native_bf16)
    with local_run.local_context(local_config) as context:
        trial = built_trial(context)
    assert trial.autocast_dtype == (torch.bfloat16 if native_bf16 else None)
    assert trial.scaler is None
    assert trial.optimizer.defaults["fused"]
    assert (
        trial.model.config._attn_implementation == fast_dropout.FAST_DROPOUT_ATTENTION
    )  # eager, fast dropout
    assert any(type(m) is fast_dropout.FastDropout for m in trial.model.modules())
    assert trial.levers.dataloader_workers == 0


def test_the_preflight_probes_the_chosen_features_on_this_cpu():
    """Every CPU feature a lever may choose runs its probe here without failing."""
    on = torch.device("cpu")
    chosen = Levers.resolve(
        local_hparams(precision="bf16", packing=True), device.read_device(on), packable=True
    )
    assert chosen.features() == ["bf16", "blockwise_attention", "fused_adamw"]
    assert device.preflight(chosen, on) == chosen


def local_hparams(**values) -> settings.Hyperparameters:
    required = {"global_batch_size": 8, "learning_rate": 1e-3, "num_train_epochs": 1}
    return settings.Hyperparameters(**required, model_type="bert", **values)


@pytest.mark.parametrize(
    ("failing", "hparams", "check", "instead"),
    [
        ("fused_adamw", {}, lambda t: not t.optimizer.defaults["fused"], "training without it"),
        (
            "blockwise_attention",
            {"packing": True},
            lambda t: isinstance(t.collate, batching.Collator) and t.levers.group_by_length,
            "padded batches",
        ),
        ("bf16", {"precision": "bf16"}, lambda t: t.autocast_dtype is None, "training in fp32"),
    ],
)
def test_a_feature_that_fails_its_preflight_is_turned_off_with_one_warning(
    local_config, monkeypatch, caplog, failing, hparams, check, instead
):
    def unavailable(levers, on):
        raise RuntimeError(f"no {failing} here\nand a second line")

    monkeypatch.setitem(device.PROBES, failing, unavailable)
    caplog.set_level(logging.INFO)
    local_config["hyperparameters"].update(hparams)
    with local_run.local_context(local_config) as context:
        trial = built_trial(context)
    assert check(trial)
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("preflight:")]
    assert len(warnings) == 1
    assert (
        f"failed on this device (RuntimeError: no {failing} here); {instead} instead"
        in (warnings[0])
    )
    assert warnings[0].endswith(f"set {levers.REQUIREMENTS[failing].lever}")
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("levers on"))
    assert line == trial.levers.line(device.read_device(torch.device("cpu")))


def test_torch_compile_without_a_compiler_is_one_error_before_training(
    local_config, monkeypatch, tmp_path
):
    monkeypatch.setenv("PATH", str(tmp_path))  # no g++ (nor $CXX) to build Inductor's kernels
    monkeypatch.delenv("CXX", raising=False)
    local_config["hyperparameters"]["torch_compile"] = True
    trained = []
    monkeypatch.setattr(model_def.BertPyTorch, "train_batch", lambda *a: trained.append(a))
    with pytest.raises(constants.ConfigError) as raised:
        local_run.run_local(model_def.run, local_config)
    assert str(raised.value) == (
        "hyperparameters.torch_compile: torch.compile (Inductor) needs a host C++ compiler (CXX, "
        "g++), and none is on PATH; set hyperparameters.torch_compile: false"
    )
    assert trained == []


def test_fused_adamw_steps_like_foreach():
    torch.manual_seed(0)
    params = [torch.randn(50, 20), torch.randn(20)]
    grads = [[torch.randn_like(p) for p in params] for _ in range(3)]
    stepped = []
    for fused in (False, True):
        copies = [p.clone().requires_grad_() for p in params]
        optimizer = torch.optim.AdamW(
            copies, lr=1e-2, weight_decay=0.01, fused=fused, foreach=not fused
        )
        for step_grads in grads:
            for p, g in zip(copies, step_grads, strict=True):
                p.grad = g.clone()
            optimizer.step()
        stepped.append(copies)
    for foreach, fused in zip(*stepped, strict=True):
        torch.testing.assert_close(fused, foreach)
    assert not torch.equal(stepped[0][0], params[0])  # the steps did move the weights


@pytest.mark.parametrize(
    "gpu, capability, expected",
    [
        ("V100", (7, 0), torch.float16),
        ("T4", (7, 5), torch.float16),
        ("A100", (8, 0), torch.bfloat16),
        ("H100", (9, 0), torch.bfloat16),
    ],
)
def test_auto_precision_on_gpus_follows_compute_capability(
    local_config, monkeypatch, gpu, capability, expected
):
    """auto on a GPU: bf16 from compute capability 8.0 on, else fp16 with the loss scaler, even
    where torch.cuda.is_bf16_supported() says yes (it counts emulated bf16 on V100 and T4)."""
    asked = []

    def get_device_capability(device):
        asked.append(device)
        return capability

    monkeypatch.setattr(torch.cuda, "get_device_capability", get_device_capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: gpu)
    with local_run.local_context(local_config) as context:
        monkeypatch.setattr(context, "device", torch.device("cuda", 0))  # as Determined sets it
        trial = settings.Settings.of(context.get_experiment_config(), context.get_hparams())
        found = device.read_device(context.device)
        precision = Levers.resolve(trial.hparams, found, packable=True).precision
        dtype, scaler = device.mixed_precision(precision, context)
    assert asked == [torch.device("cuda", 0)], gpu
    assert dtype == expected
    if expected == torch.float16:
        assert isinstance(scaler, torch.amp.GradScaler) and context._scaler is scaler
    else:
        assert scaler is None and context._scaler is None
