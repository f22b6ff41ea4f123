"""A catalog of GPUs from the CS231n notes' era to today: memory as the vendor states it and in bytes.

Vendors state GPU memory in "GB" that are binary for these cards (GDDR and HBM come in power-of-two
densities): "80 GB" is 80 GiB. The usable figure a driver reports is a little lower (ECC, reserved
memory); where this project read it off NVML on the card itself, it is given as ``usable`` and a
fit is judged against it.
"""

from __future__ import annotations

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
    usable: int | None = None  # as reported by the driver, where known

    @property
    def capacity(self) -> int:
        """What a fit is judged against: the driver-reported figure where known."""
        return self.usable or self.bytes


def _gpu(name, gb, year, source, usable_mib=None, unit="GB"):
    return GPU(name, f"{gb:g} {unit}", int(gb * GiB), year, source,
               usable_mib * MiB if usable_mib else None)


CATALOG: dict[str, GPU] = {g.name: g for g in [
    _gpu("GTX-580", 3, 2010, "NVIDIA GeForce GTX 580 3 GB variant (the notes' era: 3 GB cards)"),
    _gpu("GTX-680", 4, 2012, "NVIDIA GeForce GTX 680 4 GB variant"),
    _gpu("GTX-Titan", 6, 2013, "NVIDIA GeForce GTX TITAN datasheet"),
    _gpu("Titan-X", 12, 2015, "NVIDIA GeForce GTX TITAN X (Maxwell) datasheet"),
    _gpu("K40", 12, 2013, "NVIDIA Tesla K40 datasheet"),
    _gpu("K80", 12, 2014, "NVIDIA Tesla K80 datasheet: 24 GB per board, two GPUs of 12 GB"),
    _gpu("T4", 16, 2018, "NVIDIA T4 datasheet"),
    _gpu("V100-16GB", 16, 2017, "NVIDIA V100 datasheet"),
    _gpu("V100-32GB", 32, 2018, "NVIDIA V100 datasheet"),
    _gpu("A10", 24, 2021, "NVIDIA A10 datasheet"),
    _gpu("A10G", 24, 2021, "AWS G5 (NVIDIA A10G) documentation"),
    _gpu("L4", 24, 2023, "NVIDIA L4 datasheet"),
    _gpu("L40S", 48, 2023, "NVIDIA L40S datasheet"),
    _gpu("A100-40GB", 40, 2020, "NVIDIA A100 datasheet"),
    _gpu("A100-80GB", 80, 2020, "NVIDIA A100 datasheet"),
    _gpu("H100-80GB", 80, 2022, "NVIDIA H100 datasheet (SXM5, HBM3)"),
    _gpu("H200", 141, 2024, "NVIDIA H200 datasheet (HBM3e)"),
    _gpu("B200", 192, 2024, "NVIDIA B200 datasheet (HBM3e)"),
    _gpu("RTX-3090", 24, 2020, "NVIDIA GeForce RTX 3090 datasheet"),
    _gpu("RTX-4090", 24, 2022, "NVIDIA GeForce RTX 4090 datasheet"),
    _gpu("RTX-5090", 32, 2025, "NVIDIA GeForce RTX 5090 datasheet"),
    _gpu("MI250X", 128, 2021, "AMD Instinct MI250X datasheet: two GCDs of 64 GB each"),
    _gpu("MI300X", 192, 2023, "AMD Instinct MI300X datasheet"),
]}


def gpu(name: str) -> GPU:
    """The catalog entry for ``name`` (case and separators are forgiven: a100-80gb, A100_80GB)."""
    key = {n.lower().replace("-", "").replace("_", ""): n for n in CATALOG}
    found = key.get(name.lower().replace("-", "").replace("_", "").replace(" ", ""))
    if found is None:
        raise InputError(f"--gpu {name}: not in the catalog; see 'archcalc gpus', or give --memory 24GiB")
    return CATALOG[found]
