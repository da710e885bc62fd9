"""A timeline picture in the style of the DeepSeek-V3 paper's Figure 5: one row per
device, one coloured block per pass with its micro-batch number, and the two halves of
an overlapped F&B pair inside one black border."""

from __future__ import annotations

import dataclasses

from stages.planning.timeline import Timeline

# Figure 5's colours: forward orange, backward green, weight-backward blue. The second
# direction (DualPipe's reverse copy) gets darker shades and white numbers.
_COLOURS = {
    ("F", 0): "#f9c58d", ("F", 1): "#d9822b",
    ("B", 0): "#b6d7a8", ("B", 1): "#5f9e4f",
    ("BI", 0): "#b6d7a8", ("BI", 1): "#5f9e4f",
    ("W", 0): "#a4c2f4", ("W", 1): "#3d6fbf",
}


@dataclasses.dataclass(frozen=True)
class Block:
    device: int
    start: float
    end: float
    kind: str          # F, B, BI or W
    micro_batch: int
    direction: int
    paired: bool       # half of an overlapped F&B op


def blocks(timeline: Timeline, pair_split: tuple[float, float] | None = None) -> list[Block]:
    """The rectangles of the picture. An F&B op is drawn as its forward then its backward,
    splitting its duration in the ratio `pair_split` (default 1:2, a backward being about
    twice a forward)."""
    fwd_share, bwd_share = pair_split or (1.0, 2.0)
    out = []
    for ops in timeline.ops:
        for t in ops:
            if len(t.op.passes) == 1:
                p = t.op.passes[0]
                out.append(Block(t.device, t.start, t.end, p.kind, p.micro_batch, p.direction, False))
                continue
            middle = t.start + (t.end - t.start) * fwd_share / (fwd_share + bwd_share)
            for p, (a, b) in zip(t.op.passes, [(t.start, middle), (middle, t.end)]):
                out.append(Block(t.device, a, b, p.kind, p.micro_batch, p.direction, True))
    return out


def draw_timeline(timeline: Timeline, path: str, title: str | None = None,
                  pair_split: tuple[float, float] | None = None) -> list[Block]:
    """Write the picture to `path` (format from its suffix: .png, .svg, .pdf); returns
    the blocks drawn. `pair_split`: see `blocks`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    drawn = blocks(timeline, pair_split)
    devices = len(timeline.ops)
    span = timeline.makespan
    # about 0.3 inch per forward-sized block, within limits
    shortest = min(b.end - b.start for b in drawn if b.end > b.start)
    width = min(40.0, max(8.0, 0.3 * span / shortest))
    fig, ax = plt.subplots(figsize=(width, 0.45 * devices + 1.4))
    bars: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for b in drawn:  # one broken_barh per row and colour: thousands of blocks draw fast
        bars.setdefault((b.device, _COLOURS[(b.kind, b.direction)]), []).append((b.start, b.end - b.start))
        if (b.end - b.start) / span * width * 72 > 9:  # room for the number (points)
            ax.text((b.start + b.end) / 2, b.device + 0.45, str(b.micro_batch), ha="center", va="center",
                    fontsize=7, color="white" if b.direction else "black")
    for (device, colour), spans in bars.items():
        ax.broken_barh(spans, (device, 0.9), facecolors=colour, edgecolors="white", linewidth=0.5)
    for device, ops in enumerate(timeline.ops):  # the shared border of an overlapped pair
        pairs = [(t.start, t.end - t.start) for t in ops if len(t.op.passes) == 2]
        if pairs:
            ax.broken_barh(pairs, (device, 0.9), facecolors="none", edgecolors="black", linewidth=1.2)
    ax.set_xlim(0, span)
    ax.set_ylim(devices, -0.1)
    ax.set_yticks([d + 0.45 for d in range(devices)])
    ax.set_yticklabels([f"device {d}" for d in range(devices)])
    ax.set_xlabel("time")
    sched = timeline.schedule
    ax.set_title(title or f"{sched.name}: {sched.pipeline_parallel_size} stages, {sched.num_micro_batches} micro-batches")
    legend = [Patch(facecolor=_COLOURS[("F", 0)], label="forward (F)"),
              Patch(facecolor=_COLOURS[("B", 0)], label="backward (B; input only when W is split off)"),
              Patch(facecolor=_COLOURS[("W", 0)], label="backward for weights (W)")]
    if sched.directions == 2:
        legend += [Patch(facecolor="white", edgecolor="black", label="overlapped forward & backward (F&B)"),
                   Patch(facecolor=_COLOURS[("F", 1)], label="reverse direction (darker)")]
    ax.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, -0.35 if devices < 6 else -0.12),
              ncol=len(legend), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn
