"""Everything one GPU lease should check, in one call of at most 8 minutes.

Steps, in order, each in its own process under its own time limit; a step that fails or runs
out of time is recorded as such and the next one runs:
  install     what the call installed from the carried wheels; versions; the GPU; a measured
              bf16 matrix-product rate
  levers      what auto takes on this card for const.yaml (1 process) and distributed.yaml (8),
              its levers line, and the preflight's verdict on every feature it can probe
              (levers.REQUIREMENTS), each timed: with no C compiler for Triton (CC pointing
              nowhere, as in the configs' runtime image; first, with empty caches), then with
              the machine's
  cuda_tests  python -m pytest -m cuda tests/test_cuda.py, every test's outcome
  throughput  random-init bert-base (BertConfig defaults) on MRPC's train pairs (copies of the
              real file: MRPC's own lengths): the original example's settings (fp32, eager,
              padded to 128, batch 24) as the baseline, then the trial's defaults (packed
              batches, CUDA graphs) at batch 24 and 256, and padded batches without graphs at
              batch 24, and the path a V100 or T4 takes, forced on this card (fp16, packed
              attention with the memory-efficient kernel, CUDA graphs with no C compiler: the
              device read as compute capability 7.0 without a compiler) at batch 24 and 256,
              after warm-up steps; samples/s, real tokens/s, MFU on real tokens
              against the card's dense bf16 peak (train_speed.GPU_BF16_PEAK_TFLOPS), peak memory
  glue_projection  the trial's defaults at batch 256 (bert-base) on each GLUE task's lengths
              (.gpu_carry/glue_lengths.json, from --prepare: the real train file's, else its
              dev file's, else an assumed shape, ASSUMED_SHAPES), its samples/s, and the
              projected time of 3 epochs of every training set (GLUE_TRAIN_PAIRS)
  mrpc_job    the whole const.yaml MRPC job with all-MiniLM-L6-v2, beside a Hugging Face Trainer
              padding each batch (train_speed's hf_dynamic): wall times, ratio, dev accuracies
  profile     when the figures disappoint (large-batch MFU under PROFILE_BELOW_MFU or none, or the
              trial not faster than the Trainer): torch.profiler's table of training steps
Every figure goes into <results>/gpu_check.json as it is measured (rewritten atomically), the
output into <results>/gpu_check.log (by gpu_check.sh), so a run cut off returns what it has.

1. Here, once, in that checkout (writes .gpu_carry/, ignored by .gitignore, so only `carry`
   takes it along; the sizes it prints must leave the 64 MiB a call carries):
    python bench/gpu_check.py --prepare --data-dir ../shared/glue_data
2. The device call (the `run` tool), from the checkout the session was started in:
    command: bash bench/gpu_check.sh      carry: [".gpu_carry"]      timeout_s: 540
3. Here: copy the returned gpu_check.json into bench/results/ and commit it.

On this machine, every step at tiny size on the CPU (same JSON keys, a few seconds a step):
    python bench/gpu_check.py --dry-run --model <tiny model folder> --data-dir <glue folder> \
        --results /tmp/gpu_check
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CARRY = REPO / ".gpu_carry"
# What the lent machine's image lacks for the trial (determined's other requirements are not
# imported by a local run); it has torch, accelerate, scikit-learn and pytest, and transformers
# 5.17, older than the 5.24 that versions.py requires (13.5 MB: the carry stays under 64 MiB).
WHEELS = ("determined==0.38.1", "ruamel.yaml==0.19.1", "appdirs==1.4.4", "transformers==5.24.0")
# Seconds per step: 8 minutes in all, inside the call's timeout_s of 540.
BUDGET_S = {
    "install": 30,
    "levers": 40,
    "cuda_tests": 85,
    "throughput": 175,
    "glue_projection": 60,
    "mrpc_job": 75,
    "profile": 25,
}
# GLUE's training sets, in pairs (the official split sizes): 949,753, 2.85 million in 3 epochs.
GLUE_TRAIN_PAIRS = {
    "MNLI": 392702,
    "QQP": 363846,
    "QNLI": 104743,
    "SST-2": 67349,
    "CoLA": 8551,
    "STS-B": 5749,
    "MRPC": 3668,
    "RTE": 2490,
    "WNLI": 635,
}
# Tokens per example (mean, sd; a normal, clipped), for a task with neither a train nor a dev
# file at hand: assumptions, not measurements (bert-base-uncased's tokenizer, special tokens).
ASSUMED_SHAPES = {
    "MNLI": (39, 15),
    "QQP": (30, 14),
    "QNLI": (51, 18),
    "SST-2": (13, 7),
    "CoLA": (11, 4),
    "STS-B": (31, 10),
    "MRPC": (53, 13),
    "RTE": (77, 35),
    "WNLI": (37, 10),
}
GLUE_EPOCHS = 3
PROFILE_BELOW_MFU = 0.35


def atomic_write(path: pathlib.Path, value: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1, default=float))
    os.replace(tmp, path)


class Recorder:
    """One step's figures, written to its own file after each one."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path, self.figures = path, {}

    def __getitem__(self, key: str):
        return self.figures[key]

    def __setitem__(self, key: str, value) -> None:
        self.figures[key] = value
        atomic_write(self.path, self.figures)


# ---------------------------------------------------------------------------------------------
# The steps (each runs in a process of its own: python bench/gpu_check.py --step NAME ...).


def step_install(args, out: Recorder) -> None:
    import determined
    import torch
    import transformers

    out["python"] = sys.version.split()[0]
    out["torch"], out["transformers"] = torch.__version__, transformers.__version__
    out["determined"] = determined.__version__
    out["carried_wheels"] = sorted(p.name for p in (CARRY / "wheels").glob("*.whl"))
    cuda = args.device == "cuda"
    out["device"] = torch.cuda.get_device_name() if cuda else "cpu"
    if cuda:
        out["compute_capability"] = list(torch.cuda.get_device_capability())
        out["memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
    n = 8192 if cuda else 512
    a, b = (torch.randn(n, n, device=args.device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    start, reps = time.perf_counter(), 10
    for _ in range(reps):
        a @ b
    sync()
    out["bf16_matmul_tflops"] = 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def step_levers(args, out: Recorder) -> None:
    import torch

    from bert_glue.local.config import load_config, local_settings
    from bert_glue.trial import device, levers

    on = torch.device(args.device)
    for config, processes in (("const.yaml", 1), ("distributed.yaml", 8)):
        trial = local_settings(load_config(str(REPO / config), args.overrides), processes)
        found = device.read_device(on, processes)
        chosen = levers.Levers.resolve(trial.hparams, found, packable=True)
        out[config] = {"line": chosen.line(found), "features": chosen.features()}
    # Without a compiler first, with fresh caches: nothing Triton built can be found again.
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp()
    cc = os.environ.pop("CC", None)
    for key, compiler in (("preflight_without_compiler", False), ("preflight", True)):
        if compiler and cc is not None:
            os.environ["CC"] = cc
        elif not compiler:
            os.environ["CC"] = "/nonexistent/cc"  # Triton reads it when it builds
        verdicts = {}
        for feature, probe in device.PROBES.items():
            if feature == "inductor" and args.dry_run:  # CPUs: Inductor's C++ compiler
                verdicts[feature] = {"verdict": "not run in a dry run (a minute of C++ builds)"}
                continue
            precision = "fp16" if feature in ("fp16", "memory_efficient_attention") else "bf16"
            probed = levers.Levers(precision, None, False, False, None, False, False, 0, False)
            start = time.perf_counter()
            try:
                probe(probed, on)
                verdict = "ok"
            except Exception as e:  # the verdict is the figure
                verdict = f"{type(e).__name__}: {str(e).strip()[:300]}"
            verdicts[feature] = {"verdict": verdict, "seconds": time.perf_counter() - start}
        out[key] = verdicts


def step_cuda_tests(args, out: Recorder) -> None:
    report = pathlib.Path(tempfile.mkdtemp()) / "junit.xml"
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "tests/test_cuda.py", "-q"]
    command += ["-p", "no:cacheprovider", f"--junitxml={report}", "-o", "junit_logging=system-out"]
    out["exit_code"] = subprocess.run(command, cwd=REPO).returncode
    tests = {}
    for case in ET.parse(report).iter("testcase"):
        outcome = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        detail = next((c.get("message", "") for c in case if c.tag != "system-out"), "")
        printed = "".join(c.text or "" for c in case if c.tag == "system-out")
        tests[case.get("name")] = {
            "outcome": outcome,
            "seconds": float(case.get("time")),
            "message": detail[:500],
            "printed": printed[-1000:],
        }
    out["tests"] = tests
    for outcome, key in [("passed", "passed"), ("failure", "failed"), ("error", "errors")]:
        out[key] = sum(t["outcome"] == outcome for t in tests.values())
    out["skipped"] = sum(t["outcome"] == "skipped" for t in tests.values())
    if out["exit_code"] != 0:
        raise RuntimeError(f"pytest exited with {out['exit_code']}")


def run_variant_as_v100(*job):
    """train_speed.run_variant with the GPU read as a V100 in the configs' image: compute
    capability 7.0, no bf16 tensor cores, no C compiler (and CC pointing nowhere, so that
    Triton cannot build if anything asks it to). A CPU is read as it is."""
    import dataclasses

    import train_speed
    from bert_glue.trial import device

    real = device.read_device

    def as_v100(on, processes=1):
        found = real(on, processes)
        if not found.cuda:
            return found
        v100 = {"native_bf16": False, "capability": (7, 0), "compiler": False}
        return dataclasses.replace(found, **v100, name=f"{found.name} read as a V100")

    os.environ["CC"] = os.environ["CXX"] = "/nonexistent/cc"
    device.read_device = as_v100
    return train_speed.run_variant(*job)


def variant_figures(
    args, spec: str, overrides: list[str], max_steps, warmup: int, v100: bool = False
) -> dict:
    """One train_speed variant's figures; in a fresh process, except in a dry run (speed).
    v100: the path a V100 takes, forced on this card (run_variant_as_v100)."""
    import train_speed

    job = (spec, str(REPO / "const.yaml"), overrides, max_steps, warmup)
    run = run_variant_as_v100 if v100 else train_speed.run_variant
    start = time.perf_counter()
    if args.dry_run:
        result = run(*job) if not v100 else train_speed.in_fresh_process(run, *job)
    else:
        result = train_speed.in_fresh_process(run, *job)
    wall_s = time.perf_counter() - start  # with the new process's start and imports
    peak = train_speed.peak_flops(train_speed.device_name())
    return {**train_speed.figures(result, peak), "process_wall_s": wall_s}


def step_throughput(args, out: Recorder) -> None:
    import constants
    import train_speed

    tmp = pathlib.Path(tempfile.mkdtemp())
    os.environ["XDG_CACHE_HOME"], os.environ["XDG_DATA_HOME"] = str(tmp / "c"), str(tmp / "d")
    if args.dry_run:
        model, copies, steps, warmup, large = args.model, 1, 4, 1, 32
    else:
        model = train_speed.model_path("bert-base-random", args.model, tmp / "bert-base", 42)
        copies, steps, warmup, large = 10, 60, 15, 256
    data_dir = train_speed.repeat_train_file(constants.TASKS["MRPC"], args.data_dir, copies, tmp)
    overrides = [f"data.model_name_or_path={model}", f"data.data_dir={data_dir}"]
    overrides += ["data.download_data=false", *args.overrides]
    variants = {
        "original_b24": "original",
        "trial_b24": "project",
        f"trial_b{large}": f"project:hyperparameters.global_batch_size={large}",
        "padded_b24": "project:hyperparameters.packing=false,hyperparameters.cuda_graphs=false",
    }
    variants["v100_path_b24"] = "project"
    variants[f"v100_path_b{large}"] = f"project:hyperparameters.global_batch_size={large}"
    for name, spec in variants.items():
        v100 = name.startswith("v100_path")
        out[name] = variant_figures(args, spec, overrides, steps, warmup, v100=v100)
        if name != "original_b24":
            base = out["original_b24"]["samples_per_s"]
            out[f"{name}_vs_original"] = out[name]["samples_per_s"] / base


def task_lengths(data_dir: str, tokenizer, max_length: int) -> dict[str, dict]:
    """Each GLUE task's pairs and length histogram (counts of 0..max_length tokens): from its
    train file, else its dev file, else ASSUMED_SHAPES (10,000 draws)."""
    import numpy as np

    import constants
    import data

    lengths = {}
    for name, pairs in GLUE_TRAIN_PAIRS.items():
        task = constants.TASKS[name]
        split = next(
            (s for s in (task.train, task.dev[""]) if pathlib.Path(data_dir, s.path).is_file()),
            None,
        )
        if split is not None:
            examples = data.read_examples(task, split, data_dir)
            counts = data.featurize(examples, tokenizer, max_length).lengths.numpy()
            source = split.path
        else:
            mean, sd = ASSUMED_SHAPES[name]
            draws = np.random.default_rng(0).normal(mean, sd, 10000).round()
            counts, source = draws.clip(3, max_length).astype(int), f"assumed {mean} +- {sd}"
        histogram = np.bincount(counts, minlength=max_length + 1).tolist()
        lengths[name] = {"pairs": pairs, "source": source, "histogram": histogram}
    return lengths


def projection_batches(histogram: list[int], batch: int, steps: int, vocab: int, seed: int):
    """`steps` batches of random-token examples whose lengths follow the histogram."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    weights = torch.tensor(histogram, dtype=torch.float)
    for _ in range(steps):
        lengths = torch.multinomial(weights, batch, replacement=True, generator=generator)
        yield [
            (torch.randint(5, vocab, (n,), generator=generator), torch.zeros(n), torch.tensor(0), 0)
            for n in lengths.tolist()
        ]


def step_glue_projection(args, out: Recorder) -> None:
    import torch

    import model_def
    import train_speed
    from bert_glue.local import local_run
    from bert_glue.local.config import load_config

    tmp = pathlib.Path(tempfile.mkdtemp())
    os.environ["XDG_CACHE_HOME"], os.environ["XDG_DATA_HOME"] = str(tmp / "c"), str(tmp / "d")
    if args.dry_run:
        model, batch, steps, warmup = args.model, 8, 2, 1
    else:
        model = train_speed.model_path("bert-base-random", args.model, tmp / "bert-base", 42)
        batch, steps, warmup = 256, 12, 6
    overrides = [f"data.model_name_or_path={model}", f"data.data_dir={args.data_dir}"]
    overrides += ["data.download_data=false", f"hyperparameters.global_batch_size={batch}"]
    config = load_config(str(REPO / "const.yaml"), overrides + args.overrides)
    with local_run.local_context(config) as context:
        trial = model_def.run(context, ready=lambda _: False)  # built, not trained
    max_length = trial.settings.hparams.max_seq_length
    if args.dry_run:
        lengths = task_lengths(args.data_dir, trial.tokenizer, max_length)
    else:
        lengths = json.loads((CARRY / "glue_lengths.json").read_text())
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    out["inputs"] = {
        "model": "bert-base (random init)" if not args.dry_run else model,
        "batch": batch,
        "epochs": GLUE_EPOCHS,
        "packing": trial.levers.packing,
        "cuda_graphs": trial.levers.cuda_graphs,
        "timed_steps_per_task": steps,
        "warmup_steps_per_task": warmup,
    }
    total_s = 0.0
    for name, task in lengths.items():
        batches = [trial.collate(b) for b in projection_batches(
            task["histogram"], batch, warmup + steps, len(trial.tokenizer), seed=0
        )]  # fmt: skip
        for i, b in enumerate(batches):
            if i == warmup:
                sync()
                start = time.perf_counter()
            trial._forward(b).loss.backward()
            trial.optimizer.step()
            trial.optimizer.zero_grad()
        sync()
        samples_per_s = batch * steps / (time.perf_counter() - start)
        epoch_s = task["pairs"] / samples_per_s
        total_s += GLUE_EPOCHS * epoch_s
        histogram = task["histogram"]
        out[name] = {
            "pairs": task["pairs"],
            "lengths_from": task["source"],
            "mean_tokens": sum(n * c for n, c in enumerate(histogram)) / sum(histogram),
            "samples_per_s": samples_per_s,
            "epoch_s": epoch_s,
        }
    out["projected_glue_3_epochs_s"] = total_s
    out["projected_glue_3_epochs_min"] = total_s / 60


def step_mrpc_job(args, out: Recorder) -> None:
    from transformers import AutoModel, AutoTokenizer

    tmp = pathlib.Path(tempfile.mkdtemp())
    os.environ["XDG_CACHE_HOME"], os.environ["XDG_DATA_HOME"] = str(tmp / "c"), str(tmp / "d")
    model = tmp / "model"  # the carried fp16 weights, saved again in fp32 for training
    AutoModel.from_pretrained(args.model, dtype="float32").save_pretrained(model)
    AutoTokenizer.from_pretrained(args.model).save_pretrained(model)
    overrides = [f"data.model_name_or_path={model}", f"data.data_dir={args.data_dir}"]
    overrides += ["data.download_data=false", *args.overrides]
    if args.dry_run:
        overrides.append("hyperparameters.num_train_epochs=1")
    for name in ("trial", "hf_dynamic"):
        out[name] = variant_figures(
            args, "project" if name == "trial" else name, overrides, None, 0
        )
    out["trial_vs_hf_dynamic_wall"] = (
        out["hf_dynamic"]["process_wall_s"] / (out["trial"]["process_wall_s"])
    )


def step_profile(args, out: Recorder) -> None:
    """torch.profiler over training steps of the trial's GPU settings: bf16 autocast, SDPA,
    fused AdamW, on a batch of MRPC's mean shape (24 pairs of 56 tokens)."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig.from_pretrained(args.model) if args.dry_run else BertConfig()
    model = BertForSequenceClassification(config).to(args.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=True)
    ids = torch.randint(5, config.vocab_size, (24, 56), device=args.device)
    labels = torch.randint(0, 2, (24,), device=args.device)

    def step() -> None:
        with torch.autocast(args.device, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    for _ in range(3):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(3):
            step()
        if args.device == "cuda":
            torch.cuda.synchronize()
    sort = "cuda_time_total" if args.device == "cuda" else "cpu_time_total"
    out["steps"] = 3
    out["table"] = prof.key_averages().table(sort_by=sort, row_limit=25)


STEPS = {
    "install": step_install,
    "levers": step_levers,
    "cuda_tests": step_cuda_tests,
    "throughput": step_throughput,
    "glue_projection": step_glue_projection,
    "mrpc_job": step_mrpc_job,
    "profile": step_profile,
}


# ---------------------------------------------------------------------------------------------
# The driver: every step in a process of its own, under its time limit.


def disappointing(results: dict) -> str | None:
    """Why the figures call for a profile, or None."""
    throughput = results["steps"].get("throughput", {}).get("figures", {})
    large = [v for k, v in throughput.items() if k.startswith("trial_b") and k != "trial_b24"]
    mfu = large[0].get("mfu") if large and isinstance(large[0], dict) else None
    if mfu is None or mfu < PROFILE_BELOW_MFU:
        return f"large-batch MFU {mfu} (below {PROFILE_BELOW_MFU} or not measured)"
    ratio = results["steps"].get("mrpc_job", {}).get("figures", {}).get("trial_vs_hf_dynamic_wall")
    if ratio is None or ratio <= 1:
        return f"trial vs Trainer wall-time ratio {ratio}"
    return None


def run_step(name: str, args, results_dir: pathlib.Path, forwarded: list[str]) -> dict:
    figures_file = results_dir / f"step_{name}.json"
    command = [sys.executable, __file__, "--step", name, "--figures", str(figures_file)]
    start = time.perf_counter()
    process = subprocess.Popen(command + forwarded, cwd=REPO, start_new_session=True)
    try:
        status = "ok" if process.wait(timeout=args.budget_scale * BUDGET_S[name]) == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)  # the step and every process it started
        process.wait()
        status = "timed out"
    figures = json.loads(figures_file.read_text()) if figures_file.exists() else {}
    figures_file.unlink(missing_ok=True)
    error = figures.pop("error", None)
    return {
        "status": status,
        "seconds": time.perf_counter() - start,
        "error": error,
        "figures": figures,
    }


def drive(args, forwarded: list[str]) -> dict:
    results_dir = pathlib.Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    results = {"dry_run": args.dry_run, "device": args.device, "steps": {}}
    for name in args.steps:
        if name == "profile":
            results["profile_reason"] = disappointing(results)
            if results["profile_reason"] is None:
                results["steps"][name] = {"status": "not needed", "figures": {}}
                continue
        print(f"== gpu_check: {name}", flush=True)
        results["steps"][name] = run_step(name, args, results_dir, forwarded)
        atomic_write(results_dir / "gpu_check.json", results)
    atomic_write(results_dir / "gpu_check.json", results)
    for name, step in results["steps"].items():
        print(f"{name}: {step['status']} {step.get('seconds', 0):.0f} s {step.get('error') or ''}")
    return results


def run_one(args) -> None:
    out = Recorder(pathlib.Path(args.figures))
    try:
        STEPS[args.step](args, out)
    except BaseException as e:
        import traceback

        out["error"] = f"{type(e).__name__}: {e}"[:2000]
        traceback.print_exc()
        sys.exit(1)


def prepare(args) -> None:
    """Here, before the call: the wheels, MiniLM in fp16 and the MRPC files, into .gpu_carry."""
    import shutil

    import torch
    from transformers import AutoModel, AutoTokenizer

    import train_speed

    wheels = CARRY / "wheels"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", "3.12", "--implementation", "cp", "-d", str(wheels)]
    for platform in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"):
        command += ["--platform", platform]
    subprocess.run(command + list(WHEELS), check=True)
    source = train_speed.minilm_path()
    model = AutoModel.from_pretrained(source, dtype=torch.float16)
    model.save_pretrained(CARRY / "minilm")  # 45 MB: the fp32 wheel's 87 MB would not travel
    AutoTokenizer.from_pretrained(source).save_pretrained(CARRY / "minilm")
    shutil.copytree(
        pathlib.Path(args.data_dir, "MRPC"), CARRY / "glue_data" / "MRPC", dirs_exist_ok=True
    )
    lengths = task_lengths(args.data_dir, AutoTokenizer.from_pretrained(source), 128)
    atomic_write(CARRY / "glue_lengths.json", lengths)
    for path in sorted(CARRY.rglob("*")):
        if path.is_file():
            print(f"{path.stat().st_size / 2**20:8.2f} MiB  {path.relative_to(CARRY)}")
    total = sum(p.stat().st_size for p in CARRY.rglob("*") if p.is_file())
    print(f"{total / 2**20:8.2f} MiB  in all (a call carries 64 MiB with the working tree)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="section.key=value for every trial run")
    parser.add_argument("--prepare", action="store_true", help="fill .gpu_carry here")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, on the CPU")
    parser.add_argument("--model", default=str(CARRY / "minilm"), help="MiniLM (or tiny) folder")
    parser.add_argument("--data-dir", default=str(CARRY / "glue_data"), help="holds MRPC/")
    parser.add_argument("--results", default=os.environ.get("OUT", "bench/results/latest"))
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    parser.add_argument("--budget-scale", type=float, default=1.0, help="x every step's limit")
    parser.add_argument("--step", choices=list(STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--figures", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data_dir, args.model = os.path.abspath(args.data_dir), os.path.abspath(args.model)
    args.results = os.path.abspath(args.results)
    args.device = "cpu" if args.dry_run else "cuda"
    if args.prepare:
        prepare(args)
    elif args.step:
        run_one(args)
    else:
        forwarded = ["--model", args.model, "--data-dir", args.data_dir, *args.overrides]
        drive(args, forwarded + (["--dry-run"] if args.dry_run else []))


if __name__ == "__main__":
    main()
