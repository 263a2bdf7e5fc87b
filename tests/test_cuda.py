"""The trial on a GPU: every precision trains, the levers compute what the plain path computes,
a GPU checkpoint resumes and loads on the CPU, the loaders agree, the trial never waits for the
GPU in a training batch.

Each test takes a `device`: "cpu" always (so the tests' own logic runs in CI), "cuda" where
torch sees a GPU, marked `cuda`. On a GPU machine:
    python -m pytest -m cuda tests/test_cuda.py     # the CUDA cases only
"""

from __future__ import annotations

import functools
import itertools
import pathlib
import warnings

import pytest
import torch
from conftest import built_trial
from determined import gpu
from determined.pytorch import _pytorch_trial
from test_packing import BATCHES_OF_LENGTHS, MAX_LENGTH, Tokenizer, examples, tiny_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

import constants
import data
import model_def
from bert_glue.local import local_run
from bert_glue.results import finetuned
from bert_glue.trial import batching, metrics

CUDA_MARKS = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU"),
]


def on_cuda(*values):
    """A test case on the GPU: marked cuda, skipped where there is none."""
    return pytest.param("cuda", *values, marks=CUDA_MARKS)


@pytest.fixture(params=["cpu", on_cuda()])
def device(request, monkeypatch) -> str:
    """Where Determined's local mode puts the trial: it counts GPUs with nvidia-smi."""
    monkeypatch.setattr(gpu, "get_gpu_uuids", lambda: ["GPU-0"] if request.param == "cuda" else [])
    return request.param


@pytest.fixture(autouse=True)
def graphs_only_where_tested(local_config) -> None:
    """CUDA graphs (auto: on GPUs) compile the model, a minute per run: only the tests of
    graphs turn them on."""
    local_config["hyperparameters"]["cuda_graphs"] = False


@pytest.fixture
def no_dropout_config(local_config, tiny_model_dir, tmp_path) -> dict:
    """The tiny model without dropout, whose masks differ between the paths compared here."""
    path = tmp_path / "tiny-bert-no-dropout"
    config = BertConfig.from_pretrained(tiny_model_dir)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, config=config
    ).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    local_config["data"]["model_name_or_path"] = str(path)
    local_config["hyperparameters"]["precision"] = "fp32"
    return local_config


def build_trial(config: dict, device: str, seed: int = 0, **hparams) -> model_def.BertPyTorch:
    """The trial as Determined builds it in local mode, its random head drawn from `seed`."""
    config["hyperparameters"].update(hparams)
    torch.manual_seed(seed)
    with local_run.local_context(config) as context:
        trial = built_trial(context)
    assert trial.context.device.type == device
    return trial


def dev_logits(trial: model_def.BertPyTorch) -> torch.Tensor:
    """The trial's logits for the whole dev set, through its own forward (and autocast)."""
    trial.model.eval()
    with torch.no_grad():
        batches = trial.build_validation_data_loader().get_data_loader()
        return torch.cat(
            [trial._forward(trial.context.to_device(b)).logits.float().cpu() for b in batches]
        )


class Recording(model_def.BertPyTorch):
    """The trial, recording each training batch's loss and whether its gradients were finite
    (after the loss scaler's unscale_)."""

    losses: list[float] = []
    finite: list[bool] = []

    def _forward(self, batch):
        out = super()._forward(batch)
        if self.model.training:
            self.losses.append(out.loss.item())
        return out

    def _clip(self, params) -> None:
        params = list(params)
        super()._clip(params)
        grads = [p.grad for p in params if p.grad is not None]
        self.finite.append(all(torch.isfinite(g).all().item() for g in grads))


@pytest.mark.parametrize(
    "device, precision",
    [("cpu", "fp32"), ("cpu", "bf16"), on_cuda("fp32"), on_cuda("bf16"), on_cuda("fp16")],
    indirect=["device"],
)
def test_every_precision_trains(local_config, device, precision, monkeypatch):
    monkeypatch.setattr(Recording, "losses", [])
    monkeypatch.setattr(Recording, "finite", [])
    local_config["hyperparameters"].update(precision=precision, num_train_epochs=10)
    history = local_run.run_local(
        functools.partial(model_def.run, trial_class=Recording), local_config
    )
    losses, finite = Recording.losses, Recording.finite
    assert len(losses) == len(finite) == 10 * 6  # 48 rows in batches of 8, 10 epochs
    # fp16: the loss scaler starts high and may skip the first steps' overflowing gradients.
    assert all(finite[len(finite) // 2 :] if precision == "fp16" else finite)
    assert sum(losses[-6:]) < 0.8 * sum(losses[:6])
    assert history[-1]["validation_loss"] < history[0]["validation_loss"]


@pytest.mark.parametrize(
    "device, precision, tolerance",
    [("cpu", "bf16", 3e-2), on_cuda("bf16", 3e-2), on_cuda("fp16", 3e-3)],
    indirect=["device"],
)
def test_mixed_precision_logits_are_close_to_fp32(local_config, device, precision, tolerance):
    fp32 = dev_logits(build_trial(local_config, device, precision="fp32"))
    mixed = dev_logits(build_trial(local_config, device, precision=precision))
    assert not torch.equal(mixed, fp32)  # autocast did change the arithmetic
    torch.testing.assert_close(mixed, fp32, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize(
    "device, precision, tolerance",
    [("cpu", "fp32", 1e-5), on_cuda("fp32", 1e-4), on_cuda("bf16", 3e-2)],
    indirect=["device"],
)
def test_sdpa_gives_the_logits_and_gradients_of_eager(
    no_dropout_config, device, precision, tolerance
):
    runs = []
    for attention in ("eager", "sdpa"):
        trial = build_trial(
            no_dropout_config,
            device,
            precision=precision,
            attn_implementation=attention,
            fast_dropout=False,  # auto on CPUs, where it swaps in its own eager attention
            packing=False,  # auto on GPUs in bf16, where it swaps in its own attention
        )
        assert trial.model.config._attn_implementation == attention
        batch = next(iter(trial.build_training_data_loader().get_data_loader()))
        out = trial._forward(trial.context.to_device(batch))
        out.loss.backward()
        runs.append((out.logits.float(), [p.grad.float() for p in trial.model.parameters()]))
    (eager_logits, eager_grads), (sdpa_logits, sdpa_grads) = runs
    torch.testing.assert_close(sdpa_logits, eager_logits, atol=tolerance, rtol=tolerance)
    for a, b in zip(sdpa_grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b, atol=tolerance, rtol=10 * tolerance)


@pytest.mark.parametrize("device", [on_cuda()], indirect=True)  # CPUs: tests/test_levers.py
def test_compiled_trial_trains_like_eager(no_dropout_config, device, monkeypatch):
    """torch_compile with inductor on GPUs."""
    compiled = []
    real_compile = torch.compile

    def compile_spy(model, **kwargs):
        compiled.append(kwargs.get("backend", "inductor"))
        return real_compile(model, **kwargs)

    monkeypatch.setattr(torch, "compile", compile_spy)
    no_dropout_config["hyperparameters"]["num_train_epochs"] = 1
    runs = []
    for torch_compile in (False, True):
        no_dropout_config["hyperparameters"]["torch_compile"] = torch_compile
        runs.append(local_run.run_local(model_def.run, no_dropout_config)[-1])
    assert compiled == ["inductor", "inductor"]  # the preflight's probe, then the model
    assert runs[1]["validation_loss"] == pytest.approx(runs[0]["validation_loss"], rel=1e-3)


def checkpoints(data_home: pathlib.Path) -> list[pathlib.Path]:
    done = [p.parent for p in (data_home / "determined").glob("*/metadata.json")]
    return sorted(done, key=lambda p: p.stat().st_mtime)


def test_checkpoint_resumes_and_loads_on_the_cpu(no_dropout_config, device, tmp_path, monkeypatch):
    """A checkpoint written on the device resumes there (close: GPU kernels are not bitwise
    reproducible) and loads on the CPU for predict.py and export.py with the same outputs."""
    no_dropout_config["hyperparameters"]["num_train_epochs"] = 2
    no_dropout_config["checkpoint_storage"] = {"save_trial_latest": 2}  # keep the first too
    whole = local_run.run_local(model_def.run, no_dropout_config)
    first, last = checkpoints(tmp_path / "xdg-data")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "resumed"))
    resumed = local_run.run_local(model_def.run, no_dropout_config, str(first))
    assert resumed[-1]["validation_loss"] == pytest.approx(whole[-1]["validation_loss"], rel=1e-4)

    trained = finetuned.load(last)
    assert all(p.device.type == "cpu" for p in trained.model.parameters())
    task = constants.TASKS["MRPC"]
    examples = data.read_examples(task, task.dev[""], no_dropout_config["data"]["data_dir"])
    features = data.featurize(examples, trained.tokenizer, 32)
    batch = batching.Collator(trained.tokenizer, with_token_types=True)(
        list(data.GlueDataset(features))
    )
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "split")}
    with torch.no_grad():
        logits = trained.model(**inputs).logits
    cpu_loss = metrics.loss(task, logits.numpy(), examples.labels)
    assert cpu_loss == pytest.approx(whole[-1]["validation_loss"], rel=1e-4)

    finetuned.export(last, tmp_path / "hf_model")
    exported = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf_model").eval()
    with torch.no_grad():
        torch.testing.assert_close(exported(**inputs).logits, logits)


def test_workers_and_pinned_memory_give_the_same_batches(local_config, device):
    batches = []
    for workers in (0, 2):
        trial = build_trial(local_config, device, dataloader_workers=workers)
        loader = trial.build_training_data_loader().get_data_loader(repeat=True)
        assert (loader.num_workers, loader.pin_memory) == (workers, device == "cuda")
        batches.append([trial.context.to_device(b) for b in itertools.islice(loader, 7)])
    for a, b in zip(*batches, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].device.type == device
            assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("device", [on_cuda()], indirect=True)
def test_training_batches_make_no_host_sync_in_the_trial(local_config, device, monkeypatch):
    """torch's sync debug mode flags every operation that makes the host wait for the GPU.
    None may come from the trial's code (model_def.py, metrics.py) within a training batch;
    those from Determined and transformers are printed (gpu_check.py records them)."""
    sites = []
    train_batch = _pytorch_trial._PyTorchTrialController._train_batch

    def flagged_train_batch(self, batch, epoch_idx, batch_idx):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                return train_batch(self, batch, epoch_idx, batch_idx)
            finally:
                torch.cuda.set_sync_debug_mode("default")
                sites.append(
                    [
                        f"{pathlib.Path(w.filename).name}:{w.lineno}"
                        for w in caught
                        if "synchroniz" in str(w.message)
                    ]
                )

    monkeypatch.setattr(_pytorch_trial._PyTorchTrialController, "_train_batch", flagged_train_batch)
    local_config["hyperparameters"].update(num_train_epochs=1, packing=True, cuda_graphs=True)
    local_run.run_local(model_def.run, local_config)
    assert len(sites) == 6
    print(
        "host syncs per training batch:", [len(s) for s in sites], "at", sorted(set(sum(sites, [])))
    )
    ours = [
        s
        for s in sum(sites, [])
        if s.split(":")[0] in ("model_def.py", "metrics.py", "batching.py")
    ]
    assert ours == []


def to_cuda(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.cuda() for k, v in batch.items() if k != "split"}


def bf16_logits_loss_grads(model, inputs: dict) -> tuple:
    model.zero_grad()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(**inputs)
    out.loss.backward()
    return out.logits.float(), out.loss.float(), [p.grad.float() for p in model.parameters()]


@pytest.mark.parametrize("device", [on_cuda()], indirect=True)
@pytest.mark.parametrize("kernel", ["flash_attention", "memory_efficient_attention"])
@pytest.mark.parametrize("model_type", list(constants.PACKED_ENCODERS))
def test_varlen_attention_gives_the_logits_and_gradients_of_padded_sdpa(device, model_type, kernel):
    """On a GPU in bf16, packed attention with varlen FlashAttention-2 (compute capability 8.0
    and later) and with the memory-efficient kernel (what V100 and T4 take): padded SDPA's
    logits, loss and gradients, to bf16 rounding; bucketed rows."""
    model = tiny_model(model_type).cuda()
    model.set_attn_implementation("sdpa")
    token_types = model_type == "bert"
    items = examples(BATCHES_OF_LENGTHS["pairs"] + BATCHES_OF_LENGTHS["max length"])
    padded = batching.Collator(Tokenizer(model.config.pad_token_id), token_types)(items)
    expected = bf16_logits_loss_grads(model, to_cuda(padded))

    batching.use_packing(model, kernel)
    collate = batching.PackedCollator(
        token_types, batching.position_offset(model.config), model.config.pad_token_id, 16
    )
    inputs = batching.model_inputs(to_cuda(collate(items)), MAX_LENGTH)
    logits, loss, grads = bf16_logits_loss_grads(model, inputs)
    torch.testing.assert_close(logits, expected[0], atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(loss, expected[1], atol=3e-2, rtol=3e-2)
    for a, b in zip(grads, expected[2], strict=True):
        torch.testing.assert_close(a, b, atol=3e-2, rtol=3e-1)


@pytest.mark.parametrize("device", [on_cuda()], indirect=True)
@pytest.mark.parametrize("kernel", ["flash_attention", "memory_efficient_attention"])
def test_varlen_attention_drops_out_as_seeded(device, kernel):
    """The GPU kernels' attention dropout: on in training, the same mask for the same seed
    (resume stays exact), another for another seed; off in evaluation."""
    model = tiny_model("bert").cuda()
    for layer in model.bert.encoder.layer:
        layer.attention.self.dropout.p = 0.3  # attention dropout only
    batching.use_packing(model, kernel)
    items = examples(BATCHES_OF_LENGTHS["pairs"])
    inputs = batching.model_inputs(to_cuda(batching.PackedCollator(True, 0)(items)), MAX_LENGTH)

    def logits(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        with torch.autocast("cuda", dtype=torch.bfloat16), torch.no_grad():
            return model(**inputs).logits

    model.train()
    assert torch.equal(logits(1), logits(1))
    assert not torch.equal(logits(1), logits(2))
    model.eval()
    assert torch.equal(logits(1), logits(2))


@pytest.mark.parametrize("device", [on_cuda()], indirect=True)
@pytest.mark.parametrize("compiler", [True, False], ids=["compiler", "no-compiler"])
def test_cuda_graphs_replay_bucketed_steps_like_eager(
    no_dropout_config, device, compiler, monkeypatch, caplog
):
    """cuda_graphs: the packed rows take only the declared bucket sizes, and the graphed run
    ends where the eager one does (bf16 rounding); with no C compiler for Triton too (the
    configs' runtime image has none), and the preflight turns nothing off."""
    if not compiler:
        monkeypatch.setenv("CC", "/nonexistent/cc")  # Triton would fail to build with it
    shapes = []
    forward = model_def.BertPyTorch._forward

    def recording_forward(self, batch):
        shapes.append(tuple(batch["input_ids"].shape))
        return forward(self, batch)

    monkeypatch.setattr(model_def.BertPyTorch, "_forward", recording_forward)
    no_dropout_config["hyperparameters"].update(precision="bf16", packing=True)
    runs = []
    for graphs in (False, True):
        no_dropout_config["hyperparameters"]["cuda_graphs"] = graphs
        runs.append(local_run.run_local(model_def.run, no_dropout_config)[-1])
    declared = batching.bucket_sizes(8, 32, 32)  # batch 8, max_seq_length 32, bucket 32
    graphed = shapes[len(shapes) // 2 :]
    assert {width for _, width in graphed} <= set(declared) and {n for n, _ in graphed} == {1}
    assert runs[1]["validation_loss"] == pytest.approx(runs[0]["validation_loss"], rel=2e-2)
    assert "preflight:" not in caplog.text
