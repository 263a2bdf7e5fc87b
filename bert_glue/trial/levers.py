"""The speed levers: what each GPU feature they may use needs, and "auto" resolved for a device.

Nothing here imports torch: `python model_def.py CONFIG --levers-for v100` prints the levers of a
GPU this machine does not have, and the matrix test (tests/unit/test_levers_matrix.py) checks
every config on every GPU below against REQUIREMENTS. device.py reads the Device off the real
device and runs the preflight, which turns off, one warning line each, what fails anyway.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

from constants import PACKED_ENCODERS, ConfigError

AUTO = "auto"
HALF = ("bf16", "fp16")


@dataclasses.dataclass(frozen=True)
class Device:
    """What "auto" depends on: the kind of device, whether its matrix units do bf16 natively,
    its compute capability (CUDA), whether Inductor finds a host compiler, and how many
    processes train together."""

    kind: str  # "cpu" or "cuda"
    native_bf16: bool  # CUDA compute capability 8.0 and later; CPUs with AMX or AVX-512 BF16
    processes: int = 1
    capability: tuple[int, int] | None = None  # a CUDA GPU's compute capability
    compiler: bool = False  # Triton's C compiler (GPUs), Inductor's C++ compiler (CPUs)
    name: str = ""  # what the levers' line calls it

    @property
    def cuda(self) -> bool:
        return self.kind == "cuda"

    def describe(self) -> str:
        what = self.name or self.kind
        if self.capability is not None:
            what += f" (compute capability {sm(self.capability)})"
        return f"{what}, {self.processes} process{'es' if self.processes > 1 else ''}"


def sm(capability: tuple[int, int]) -> str:
    return f"{capability[0]}.{capability[1]}"


def arch(capability: tuple[int, int]) -> str:
    """The architecture a torch build names for a compute capability: sm_70 for 7.0."""
    return f"sm_{capability[0]}{capability[1]}"


# The GPUs --levers-for knows, with their compute capability (NVIDIA, "CUDA GPUs - Compute
# Capability", developer.nvidia.com/cuda-gpus), and the kinds of CPU, with whether their matrix
# units do bf16 natively (AMX, AVX-512 BF16) or not (AVX2, AVX-512 without BF16).
GPUS = {
    "v100": (7, 0),
    "t4": (7, 5),
    "a10": (8, 6),
    "a100": (8, 0),
    "h100": (9, 0),
    "h200": (9, 0),
    "b200": (10, 0),
}
CPUS = {"cpu-avx2": False, "cpu-avx512": False, "cpu-avx512-bf16": True, "cpu-amx": True}


def catalogued(name: str, processes: int, compiler: bool) -> Device:
    """The Device of a GPU or CPU kind named in GPUS or CPUS."""
    if name in GPUS:
        capability = GPUS[name]
        return Device("cuda", capability >= (8, 0), processes, capability, compiler, name.upper())
    return Device("cpu", CPUS[name], processes, None, compiler, name.upper())


def has_compiler(kind: str) -> bool:
    """Whether Inductor will find the host compiler it builds kernels with: on GPUs Triton's C
    compiler (triton/runtime/build.py: $CC, else gcc, else clang), on CPUs Inductor's C++
    compiler (torch/_inductor/config.py, cpp.cxx: $CXX, else g++)."""
    if kind == "cuda":
        named = os.environ.get("CC")
        return bool(shutil.which(named)) if named else any(map(shutil.which, ("gcc", "clang")))
    return bool(shutil.which(os.environ.get("CXX") or "g++"))


@dataclasses.dataclass(frozen=True)
class Requirement:
    """What a feature that a lever may use needs of the device, and where that is written."""

    what: str  # the feature, as the levers' line and the preflight name it
    lever: str  # how to set it, for the error and the warning
    source: str
    cuda: bool = True  # a CUDA GPU
    capability: tuple[int, int] = (0, 0)  # at least this compute capability
    precisions: tuple[str, ...] = ("fp32", "bf16", "fp16")
    # bf16 from this compute capability (cutlass' kernels), if lower than for the rest
    bf16_capability: tuple[int, int] | None = None
    compiler: bool = False  # a host compiler (Device.compiler)


REQUIREMENTS = {
    "bf16": Requirement(
        "bf16 autocast",
        "hyperparameters.precision: fp16 or fp32",
        "bf16 tensor-core math from compute capability 8.0 (NVIDIA A100 Tensor Core GPU "
        "Architecture whitepaper); below it torch emulates bf16 (auto takes fp16 there), and "
        "torch.cuda.is_bf16_supported() still answers True (it counts emulation)",
        cuda=False,
    ),
    "fp16": Requirement(
        "fp16 autocast with a loss scaler",
        "hyperparameters.precision: bf16 or fp32",
        "torch.amp: fp16 autocast runs on CUDA devices (CPU autocast takes bf16)",
    ),
    "flash_attention": Requirement(
        "packed attention with FlashAttention-2",
        "hyperparameters.packing: false (padded batches)",
        "torch's aten/src/ATen/native/transformers/cuda/flash_attn/flash_api.cpp: 'FlashAttention "
        "only supports Ampere GPUs or newer' and 'FlashAttention only support fp16 and bf16 data "
        "type'; torch's own tests gate it on SM80OrLater",
        capability=(8, 0),
        precisions=HALF,
    ),
    "memory_efficient_attention": Requirement(
        "packed attention with the memory-efficient kernel",
        "hyperparameters.packing: false (padded batches)",
        "torch's aten/src/ATen/native/transformers/cuda/mem_eff_attention (cutlass kernels from "
        "sm_50; bf16 from sm_80), the kernel SDPA itself takes on V100 and T4",
        capability=(5, 0),
        bf16_capability=(8, 0),
    ),
    "blockwise_attention": Requirement(
        "packed attention in per-example blocks",
        "hyperparameters.packing: false (padded batches)",
        "batching.blockwise_attention: matrix products and a softmax, on any device",
        cuda=False,
    ),
    "cuda_graphs": Requirement(
        "CUDA graphs (torch.compile's cudagraphs backend, no Inductor)",
        "hyperparameters.cuda_graphs: false",
        "torch/_dynamo/backends/cudagraphs.py: aot_autograd's graphs replayed by cudagraph trees, "
        "no generated kernels, so no compiler",
    ),
    "inductor": Requirement(
        "torch.compile (Inductor)",
        "hyperparameters.torch_compile: false",
        "triton/runtime/build.py builds Triton's launcher with $CC, gcc or clang ('Failed to find "
        "C compiler'), and Inductor's CPU kernels need $CXX or g++ (torch/_inductor/config.py); "
        "PyTorch's runtime images have none (pytorch/pytorch#116696)",
        cuda=False,
        compiler=True,
    ),
    "fused_adamw": Requirement(
        "fused AdamW",
        "hyperparameters.fused_adamw: false",
        "torch.optim.AdamW(fused=True): kernels for CPUs and CUDA GPUs",
        cuda=False,
    ),
}
# A packed batch's attention kernels, fastest first: auto takes the first the device runs.
PACKED_KERNELS = ("flash_attention", "memory_efficient_attention", "blockwise_attention")


def unmet(feature: str, device: Device, precision: str) -> str | None:
    """Why the device cannot run the feature in this precision (REQUIREMENTS), or None."""
    need = REQUIREMENTS[feature]
    if need.cuda and not device.cuda:
        return f"{need.what} needs a CUDA GPU"
    capability = device.capability or (0, 0)
    least = need.bf16_capability if precision == "bf16" and need.bf16_capability else None
    least = max(need.capability, least or need.capability)
    if device.cuda and capability < least:
        return (
            f"{need.what} needs compute capability {sm(least)}"
            f"{' in bf16' if least != need.capability else ''}, this GPU has {sm(capability)}"
        )
    if precision not in need.precisions:
        return f"{need.what} needs {' or '.join(need.precisions)}, not {precision}"
    if need.compiler and not device.compiler:
        compiler = "C compiler (CC, gcc, clang)" if device.cuda else "C++ compiler (CXX, g++)"
        return f"{need.what} needs a host {compiler}, and none is on PATH"
    return None


@dataclasses.dataclass(frozen=True)
class Levers:
    """The levers with "auto" resolved: what the trial does on this device, and why."""

    precision: str  # fp32, bf16 or fp16 (with a loss scaler)
    attn_implementation: str | None  # None: transformers' default (SDPA)
    fast_dropout: bool
    fused_adamw: bool
    packed_attention: str | None  # a PACKED_KERNELS feature; None: padded batches
    cuda_graphs: bool
    group_by_length: bool
    dataloader_workers: int
    torch_compile: bool
    why: tuple[str, ...] = ()  # what auto decided for this device, and why

    @property
    def packing(self) -> bool:
        return self.packed_attention is not None

    @classmethod
    def resolve(cls, hp, device: Device, packable: bool) -> Levers:
        """The levers of the hyperparameters hp on this device; packable: whether packed
        batches serve the model's type. auto takes nothing REQUIREMENTS rules out; an explicit
        choice it rules out is a ConfigError naming the key, the reason and what to set.

        auto: bf16 where it is native, else fp16 on GPUs (with a loss scaler) and fp32 on CPUs;
        eager attention, fast dropout and no workers on CPUs, where SDPA's backward and torch's
        dropout are slow and batching is cheap; packing on GPUs in bf16 or fp16, for the model
        types it serves, with the fastest attention kernel the GPU runs; CUDA graphs on one GPU
        (a DDP-wrapped model's graphs have not run on several); length grouping unless packing.
        """
        why = []
        precision = hp.precision
        if precision == AUTO:
            precision = "bf16" if device.native_bf16 else "fp16" if device.cuda else "fp32"
            if not device.native_bf16:
                why.append(
                    f"precision {precision}: "
                    + (
                        unmet_bf16(device)
                        if device.cuda
                        else "this CPU has no native bf16 (AMX or AVX-512 BF16)"
                    )
                )
        for feature, chosen in (
            ("fp16", precision == "fp16"),
            ("cuda_graphs", hp.cuda_graphs is True),
            ("inductor", hp.torch_compile),
        ):
            problem = unmet(feature, device, precision) if chosen else None
            if problem:
                lever = REQUIREMENTS[feature].lever
                raise ConfigError(f"{lever.partition(':')[0]}: {problem}; set {lever}")
        packed_attention = None
        if _resolved(hp.packing, device.cuda and precision in HALF and packable):
            packed_attention = next(k for k in PACKED_KERNELS if not unmet(k, device, precision))
            if packed_attention != PACKED_KERNELS[0] and device.cuda:
                why.append(unmet(PACKED_KERNELS[0], device, precision))
        cuda_graphs = _resolved(hp.cuda_graphs, device.cuda and device.processes == 1)
        if hp.cuda_graphs == AUTO and device.cuda and not cuda_graphs:
            why.append("no CUDA graphs: several processes (DDP)")
        return cls(
            precision=precision,
            attn_implementation=_resolved(hp.attn_implementation, None if device.cuda else "eager"),
            fast_dropout=_resolved(hp.fast_dropout, not device.cuda),
            fused_adamw=_resolved(hp.fused_adamw, device.kind in ("cpu", "cuda")),
            packed_attention=packed_attention,
            cuda_graphs=cuda_graphs,
            group_by_length=_resolved(hp.group_by_length, packed_attention is None),
            dataloader_workers=_resolved(hp.dataloader_workers, 2 if device.cuda else 0),
            torch_compile=hp.torch_compile,
            why=tuple(why),
        )

    def features(self) -> list[str]:
        """The REQUIREMENTS features these levers use, in the order the preflight tries them."""
        used = [self.precision] if self.precision in HALF else []
        used += [self.packed_attention] if self.packed_attention else []
        used += ["cuda_graphs"] if self.cuda_graphs and not self.torch_compile else []
        used += ["inductor"] if self.torch_compile else []
        return used + (["fused_adamw"] if self.fused_adamw else [])

    def without(self, feature: str) -> Levers:
        """These levers with the feature turned off: the next packed kernel, fp32 for a failed
        precision, padded batches when no packed kernel is left."""
        if feature in HALF:  # FlashAttention takes bf16 and fp16 only; the next kernel, fp32 too
            flash = self.packed_attention == PACKED_KERNELS[0]
            kernel = PACKED_KERNELS[1] if flash else self.packed_attention
            return dataclasses.replace(self, precision="fp32", packed_attention=kernel)
        if feature in PACKED_KERNELS:
            rest = PACKED_KERNELS[PACKED_KERNELS.index(feature) + 1 :]
            kernel = rest[0] if rest else None
            return dataclasses.replace(
                self,
                packed_attention=kernel,
                group_by_length=self.group_by_length or kernel is None,
            )
        off = {"cuda_graphs": "cuda_graphs", "inductor": "torch_compile"}.get(feature, feature)
        return dataclasses.replace(self, **{off: False})

    def line(self, device: Device) -> str:
        """One line: the levers chosen on this device, and why."""
        chosen = [f"precision {self.precision}"]
        if self.packed_attention:
            chosen.append(REQUIREMENTS[self.packed_attention].what)
        else:
            chosen.append(
                "padded batches" + (", grouped by length" if self.group_by_length else "")
            )
        chosen.append(f"{self.attn_implementation or 'sdpa'} attention")
        for on, what in (
            (self.cuda_graphs, "CUDA graphs"),
            (self.torch_compile, "torch.compile"),
            (self.fused_adamw, "fused AdamW"),
            (self.fast_dropout, "fast dropout"),
        ):
            if on:
                chosen.append(what)
        chosen.append(f"{self.dataloader_workers} loader workers")
        because = f" ({'; '.join(self.why)})" if self.why else ""
        return f"levers on {device.describe()}: {', '.join(chosen)}{because}"


def unmet_bf16(device: Device) -> str:
    capability = sm(device.capability or (0, 0))
    return f"bf16 tensor cores need compute capability 8.0, this GPU has {capability}"


def _resolved(choice, default):
    return default if choice == AUTO else choice


def packable(model_type: str) -> bool:
    """Whether packed batches can feed a model of this type (batching.py)."""
    return model_type in PACKED_ENCODERS
