"""Named accelerators: memory, peak compute and the per-GPU link bandwidths the planner
uses. Sources are noted per number; the H800 links are the DeepSeek-V3 paper's own."""

from __future__ import annotations

import dataclasses

MIB = 1 << 20
GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
    name: str
    memory_bytes: int          # what the driver reports as total (nvidia-smi "MiB" x 2^20)
    bf16_tflops: float         # dense peak, no sparsity
    fp8_tflops: float
    nvlink_gbps: float         # GB/s per GPU, one direction, what all-to-all gets within a node
    ib_gbps: float             # GB/s per GPU across nodes
    sms: int                   # streaming multiprocessors
    note: str = ""


DEVICES: dict[str, DeviceSpec] = {
    # V3 paper §3.2.2: "cross-node GPUs are fully interconnected with IB, and intra-node
    # communications are handled via NVLink. NVLink offers a bandwidth of 160 GB/s,
    # roughly 3.2 times that of IB (50 GB/s)"; 20 of the 132 SMs drive communication.
    # Compute as the H100 SXM (the H800 differs in its interconnect).
    "h800": DeviceSpec("H800 80GB", 81559 * MIB, 989.4, 1978.9, nvlink_gbps=160.0, ib_gbps=50.0, sms=132,
                       note="links: DeepSeek-V3 paper §3.2.2 (effective NVLink 160 GB/s, IB 50 GB/s)"),
    # NVIDIA H100 SXM datasheet: NVLink 900 GB/s total (450 per direction), ConnectX-7 400 Gb/s
    # per GPU (50 GB/s). The NVLink figure is nominal, not a measured all-to-all rate.
    "h100": DeviceSpec("H100 SXM 80GB", 81559 * MIB, 989.4, 1978.9, nvlink_gbps=450.0, ib_gbps=50.0, sms=132,
                       note="links: datasheet nominal (NVLink 450 GB/s per direction, 400 Gb/s IB per GPU)"),
    # NVIDIA H200 SXM datasheet: 141 GB HBM3e, the H100's compute and NVLink; 143771 MiB is
    # what nvidia-smi reported on the lent H200 (2026-12-03). The 80 GB parts report 81559 MiB.
    "h200": DeviceSpec("H200 141GB", 143771 * MIB, 989.4, 1978.9, nvlink_gbps=450.0, ib_gbps=50.0, sms=132,
                       note="links: datasheet nominal (NVLink 450 GB/s per direction, 400 Gb/s IB per GPU)"),
}


def get_device(name: str) -> DeviceSpec:
    try:
        return DEVICES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown device {name!r} (--device); choose one of {', '.join(DEVICES)}") from None
