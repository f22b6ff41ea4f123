"""A catalog of GPUs from the CS231n notes' era to today: memory as the vendor states it, and as the
driver reports it, each with its source.

Vendors state GPU memory in "GB" that are binary for these cards (GDDR and HBM come in power-of-two
densities): "80 GB" is 80 GiB. What a process can have is less, and a verdict near the limit is
only as good as the figure it is judged against, so ``fit`` and ``plan`` judge against what the
driver reports: CUDA's total (``cudaMemGetInfo``, ``torch.cuda.mem_get_info``; it leaves out what
the driver reserves) where a published deviceQuery gives it, else nvidia-smi's ``memory.total``
(NVML), else -- said so in ``archcalc gpus`` -- the vendor's figure. nvidia-smi's total depends on
the driver: before about R525, A100 and V100 reported less (40536 MiB for an A100-40GB, 16160 MiB
for a V100-16GB); the figures here are from drivers R525 and later, as the sources say.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from archcalc.errors import InputError

GiB = 1 << 30
MiB = 1 << 20


@dataclass(frozen=True)
class GPU:
    name: str
    vendor_memory: str  # as the vendor's datasheet states it
    bytes: int  # the vendor's figure in bytes
    year: int
    source: str
    smi: int | None = None  # nvidia-smi's memory.total (rocm-smi's VRAM total for AMD), bytes
    cuda: int | None = None  # CUDA's total (cudaMemGetInfo / deviceQuery), bytes
    reported_source: str = ""  # where the driver's figures were read
    arch: str = ""  # the chip's architecture: fermi ... hopper, blackwell; AMD's cdna2, cdna3
    sm: tuple[int, int] | None = None  # CUDA compute capability (major, minor); None: not an NVIDIA GPU

    @property
    def capacity(self) -> int:
        """What a fit is judged against: CUDA's total, else nvidia-smi's, else the vendor's figure."""
        return self.cuda or self.smi or self.bytes

    @property
    def capacity_source(self) -> str:
        return "CUDA's total" if self.cuda else "nvidia-smi's total" if self.smi else "the vendor's figure: no " \
            "driver-reported total found"


def _gpu(name, gb, year, source, smi_mib=None, cuda=None, reported="", unit="GB", *, arch: str,
         sm: tuple[int, int] | None = None):
    return GPU(name, f"{gb:g} {unit}", int(gb * GiB), year, source, smi_mib * MiB if smi_mib else None, cuda,
               reported, arch, sm)


THAMADA = "github.com/thamada/nvidia-smi (captured nvidia-smi and deviceQuery output), gls/"
# Architectures and compute capabilities: NVIDIA's table of CUDA GPUs (developer.nvidia.com/cuda-gpus)
# and its legacy list for Fermi and Kepler; AMD's ROCm hardware specifications for CDNA.
MODAL = "github.com/modal-labs/modal-client/pull/2797 (totals measured on Modal's GPUs)"
CATALOG: dict[str, GPU] = {g.name: g for g in [
    _gpu("GTX-580", 3, 2010, "NVIDIA GeForce GTX 580 3 GB variant (the notes' era: 3 GB cards)",
         arch="fermi", sm=(2, 0)),
    _gpu("GTX-680", 4, 2012, "NVIDIA GeForce GTX 680 4 GB variant", arch="kepler", sm=(3, 0)),
    _gpu("GTX-Titan", 6, 2013, "NVIDIA GeForce GTX TITAN datasheet", 6143, None,
         "github.com/cBio/cbio-cluster/issues/39: nvidia-smi (driver 325.15) '14MB / 6143MB'",
         arch="kepler", sm=(3, 5)),
    _gpu("Titan-X", 12, 2015, "NVIDIA GeForce GTX TITAN X (Maxwell) datasheet", None, 12797607936,
         "github.com/gpgpu-sim/gpgpu-sim_distribution/issues/169: deviceQuery 'Total amount of global memory: "
         "12205 MBytes (12797607936 bytes)'", arch="maxwell", sm=(5, 2)),
    _gpu("K40", 12, 2013, "NVIDIA Tesla K40 datasheet", arch="kepler", sm=(3, 5)),
    _gpu("K80", 12, 2014, "NVIDIA Tesla K80 datasheet: 24 GB per board, two GPUs of 12 GB", 11441, None,
         "github.com/rcgsheffield/sheffield_hpc/pull/1030: nvidia-smi '0MiB / 11441MiB' (ECC on)",
         arch="kepler", sm=(3, 7)),
    _gpu("T4", 16, 2018, "NVIDIA T4 datasheet", 15360, 15843721216,
         MODAL + ": T4 15360MiB; CUDA total 15843721216 B", arch="turing", sm=(7, 5)),
    _gpu("V100-16GB", 16, 2017, "NVIDIA V100 datasheet", 16384, None,
         "github.com/1CatAI/1Cat-vLLM/issues/85: nvidia-smi (driver 570.211.01) '5MiB / 16384MiB'",
         arch="volta", sm=(7, 0)),
    _gpu("V100-32GB", 32, 2018, "NVIDIA V100 datasheet", 32768, None,
         "github.com/Wan-Video/Wan2.1/issues/5: nvidia-smi (driver 525.105.17) '308MiB / 32768MiB'",
         arch="volta", sm=(7, 0)),
    _gpu("A10", 24, 2021, "NVIDIA A10 datasheet", 23028, None, MODAL + ": A10 23028MiB", arch="ampere", sm=(8, 6)),
    _gpu("A10G", 24, 2021, "AWS G5 (NVIDIA A10G) documentation", 23028, None,
         "github.com/NVIDIA/DCGM/issues/232: nvidia-smi '8722MiB / 23028MiB'", arch="ampere", sm=(8, 6)),
    _gpu("L4", 24, 2023, "NVIDIA L4 datasheet", 23034, 23570219008,
         THAMADA + "L4_smi.py (driver 550.90.07, '1MiB / 23034MiB') and L4_deviceQuery.py", arch="ada", sm=(8, 9)),
    _gpu("L40S", 48, 2023, "NVIDIA L40S datasheet", 46068, 47803596800,
         THAMADA + "L40S_smi.py (driver 550.127.05, '1MiB / 46068MiB') and L40S_deviceQuery.py",
         arch="ada", sm=(8, 9)),
    _gpu("A100-40GB", 40, 2020, "NVIDIA A100 datasheet", 40960, None,
         "github.com/bottlerocket-os/bottlerocket-core-kit/pull/834: nvidia-smi (driver 580) '598MiB / 40960MiB'",
         arch="ampere", sm=(8, 0)),
    _gpu("A100-80GB", 80, 2020, "NVIDIA A100 datasheet", 81920, 85100068864,
         THAMADA + "A100SXMx4_smi.py (driver 555.42.02, '1MiB / 81920MiB') and A100SXMx4_deviceQuery.py",
         arch="ampere", sm=(8, 0)),
    _gpu("H100-80GB", 80, 2022, "NVIDIA H100 datasheet (SXM5, HBM3)", 81559, 85045477376,
         "github.com/NVIDIA/nccl/issues/1264: nvidia-smi (driver 550.54.15) '0MiB / 81559MiB'; "
         + THAMADA + "H100SXMx8_deviceQuery.py for CUDA's total", arch="hopper", sm=(9, 0)),
    _gpu("H200", 141, 2024, "NVIDIA H200 datasheet (HBM3e)", arch="hopper", sm=(9, 0)),
    _gpu("B200", 192, 2024, "NVIDIA B200 datasheet (HBM3e)", 183359, None,
         "github.com/NVIDIA/TensorRT-LLM/issues/10278: nvidia-smi '166593MiB / 183359MiB'",
         arch="blackwell", sm=(10, 0)),
    _gpu("RTX-3090", 24, 2020, "NVIDIA GeForce RTX 3090 datasheet", 24576, 25327697920,
         THAMADA + "RTX3090_smi.py (driver 560.35.03, '2MiB / 24576MiB') and its deviceQuery",
         arch="ampere", sm=(8, 6)),
    _gpu("RTX-4090", 24, 2022, "NVIDIA GeForce RTX 4090 datasheet", 24564, 25386352640,
         THAMADA + "RTX4090_smi.py (driver 550.127.05, '2MiB / 24564MiB') and its deviceQuery",
         arch="ada", sm=(8, 9)),
    _gpu("RTX-5090", 32, 2025, "NVIDIA GeForce RTX 5090 datasheet", 32607, None,
         "github.com/noonghunna/club-3090/issues/617: nvidia-smi '492MiB / 32607MiB'",
         arch="blackwell", sm=(12, 0)),
    _gpu("MI250X", 64, 2021, "AMD Instinct MI250X datasheet: 128 GB per board, two GCDs of 64 GB, each a device",
         65520, None, "github.com/jaglinux/pytorch-notes memory_stats.py: torch.cuda.mem_get_info total "
         "63.984375 GB on an MI250 (the same 64 GB GCD; no MI250X figure found)", arch="cdna2"),
    _gpu("MI300X", 192, 2023, "AMD Instinct MI300X datasheet", 196592, None,
         "github.com/ROCm/legacy-rocm-build/issues/4750: rocm-smi 'VRAM Total Memory (B): 206141652992'",
         arch="cdna3"),
]}


# Words a GPU's full name carries that do not change its memory: the vendor's and the product line's
# names, and the board's form factor and memory type, as nvidia-smi and torch.cuda.get_device_name
# print them ("NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3", "Tesla T4", "AMD Instinct MI300X").
# NVL is kept: an H100 NVL has 94 GB, not the H100-80GB's.
NAME_NOISE = re.compile(r"nvidia|geforce|tesla|amd|instinct|sxm\d*|pcie|hbm\d*e?")


def _key(text: str) -> str:
    """A name as compared: lower case, the words in NAME_NOISE dropped, only letters and digits."""
    return "".join(w for w in re.split(r"[^a-z0-9]+", text.lower()) if not NAME_NOISE.fullmatch(w))


def _names_by_key() -> dict[str, list[str]]:
    """Each spelling a user may give, to the catalog names it can mean: the name itself, its memory as
    80gb, 80g or 80, and the bare model (A100, H100), which means every card of that model."""
    keys: dict[str, list[str]] = {}
    for name in CATALOG:
        model, memory = re.fullmatch(r"(.*?)(?:-(\d+)GB)?", name).groups()  # type: ignore[union-attr]
        spelled = {_key(name), _key(model)}
        if memory:
            spelled |= {_key(model) + memory + "g", _key(model) + memory}
        for key in spelled:
            keys.setdefault(key, []).append(name)
    return keys


def gpu(name: str) -> GPU:
    """The catalog entry for ``name``, forgiving case, separators, the vendor's words and the form
    factor (a100_80gb, "NVIDIA A100-SXM4-80GB", h100); a model with several memory sizes (A100, V100)
    must say which, and a name not in the catalog is answered with the nearest that are."""
    names = _names_by_key()
    found = names.get(_key(name), [])
    if len(found) == 1:
        return CATALOG[found[0]]
    if found:
        raise InputError(f"--gpu {name}: which one? did you mean {_either(found)}? (see 'archcalc gpus')")
    near = [n for k in difflib.get_close_matches(_key(name), list(names), n=3, cutoff=0.6) for n in names[k]]
    hint = f"did you mean {_either(list(dict.fromkeys(near)))}? " if near else ""
    raise InputError(f"--gpu {name}: not in the catalog; {hint}see 'archcalc gpus', or give --memory 24GiB")


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
