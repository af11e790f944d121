"""Writes benchmark results as CSV, a Markdown table and a PNG plot (atomically)."""
import csv
import io

from mibcore._io import atomic_write_bytes

COLUMNS = [
    "op", "shape", "kind", "provider", "device", "forward_ms", "backward_ms", "full_ms",
    "speedup_full", "speedup_forward", "roofline_full", "saved_MB", "peak_MB", "train_ms", "speedup_train", "note",
]


def to_csv(rows):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in COLUMNS})
    return buffer.getvalue()


def _fmt(value, digits=3):
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def to_markdown(rows, machine):
    ops = [r for r in rows if not r.get("train_ms")]
    train = [r for r in rows if r.get("train_ms")]
    lines = [
        f"Machine: {machine}. Times are medians in ms; speedups are against the case's first provider "
        "(the eager `reference`; for the dropout operators `torch`, i.e. nn.Dropout's F.dropout; for "
        "training `paper`) in the same run; roofline = fraction of the measured copy bandwidth (elementwise "
        "ops) or fp32 GEMM throughput (fusion GEMMs) reached by forward+backward; saved = memory held from "
        "forward to backward: tensors autograd saves beyond the inputs, plus the outputs.",
        "",
    ]
    if ops:
        lines += [
            "| op | shape | provider | fwd ms | bwd ms | fwd+bwd ms | speedup fwd+bwd | speedup fwd | roofline | saved MB |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in ops:
            roof = r.get("roofline_full")
            lines.append(
                f"| {r['op']} | {r['shape']} | {r['provider']} | {_fmt(r['forward_ms'])} | {_fmt(r['backward_ms'])} "
                f"| {_fmt(r['full_ms'])} | {_fmt(r['speedup_full'])}x | {_fmt(r['speedup_forward'])}x "
                f"| {'-' if roof in (None, '') else f'{100 * roof:.0f}%'} | {_fmt(r['saved_MB'])} |"
            )
        lines.append("")
    if train:
        lines += [
            "Training (C-MIB, all dropouts on): `paper` = benchmarks/paper_model.py, the paper's formulation in "
            "plain PyTorch; `mibcore` = mibcore's model on the `auto` backend, `mibcore-reference` on the "
            "`reference` backend; `-compile` = torch.compile of the forward + loss (the optimizer eager). "
            "train = the step (zero_grad, forward + loss, backward, Adam) or the epoch; fwd = forward + loss "
            "recording autograd. Both models are the paper's (the same parameters, the faithful loss, the "
            "paper's three-layer tensor head); the paper's model gets torch's default Adam, mibcore's the "
            "fused Adam of its training engine.",
            "",
            "| op | shape | provider | fwd ms | bwd ms | fwd+bwd ms | train ms | speedup train | speedup fwd+bwd | note |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in train:
            full = r.get("speedup_full")
            lines.append(
                f"| {r['op']} | {r['shape']} | {r['provider']} | {_fmt(r.get('forward_ms'))} "
                f"| {_fmt(r.get('backward_ms'))} | {_fmt(r.get('full_ms'))} | {_fmt(r['train_ms'])} "
                f"| {_fmt(r['speedup_train'])}x | {'-' if full is None else f'{_fmt(full)}x'} | {r.get('note') or ''} |"
            )
        lines.append("")
    return "\n".join(lines)


def breakdown_to_csv(breakdowns):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["shape", "provider", "component", "ms_per_step"])
    for b in breakdowns:
        for component, ms in b.items():
            if component not in ("shape", "provider"):
                writer.writerow([b["shape"], b["provider"], component, f"{ms:.4f}"])
    return buffer.getvalue()


def breakdown_to_markdown(breakdowns):
    """One table per training-step case: components x providers, ms per step (self CPU time)."""
    if not breakdowns:
        return ""
    lines = [
        "## Where a training step's time goes",
        "",
        "torch.profiler over 3 steps per provider, self CPU time per step in ms, grouped by op name "
        "(benchmarks/breakdown.py): an op goes to the first component matching it, its parent ops, or "
        "(attention) the nn.MultiheadAttention call that ran it; a backward op to its forward op's. "
        "Profiling slows a step: wall is the profiled step. A compiled model's fused kernels are one "
        "\"compiled region\" and its attention has no scope.",
        "",
    ]
    for shape in dict.fromkeys(b["shape"] for b in breakdowns):
        group = [b for b in breakdowns if b["shape"] == shape]
        components = [c for c in group[0] if c not in ("shape", "provider", "wall")]
        lines += [f"**train_step {shape}**", "",
                  "| component | " + " | ".join(b["provider"] for b in group) + " |",
                  "| --- |" + " ---: |" * len(group)]
        for c in components:
            if any(b[c] >= 0.05 for b in group):
                lines.append(f"| {c} | " + " | ".join(f"{b[c]:.1f}" for b in group) + " |")
        lines += ["| wall (profiled) | " + " | ".join(f"{b['wall']:.1f}" for b in group) + " |", ""]
    return "\n".join(lines)


def to_png(rows, path):
    """Bar chart of the forward+backward speedup of each provider, per case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys((r["op"], r["shape"]) for r in rows))
    providers = list(dict.fromkeys(r["provider"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cases)), 4))
    width = 0.8 / len(providers)
    for i, provider in enumerate(providers):
        values = []
        for case in cases:
            match = [r for r in rows if (r["op"], r["shape"]) == case and r["provider"] == provider]
            values.append((match[0].get("speedup_train") or match[0].get("speedup_full") or 0.0) if match else 0.0)
        ax.bar([c + i * width for c in range(len(cases))], values, width, label=provider)
    ax.set_xticks([c + width * (len(providers) - 1) / 2 for c in range(len(cases))])
    ax.set_xticklabels([f"{op}\n{shape}" for op, shape in cases], fontsize=7)
    ax.set_ylabel("speedup vs the case's baseline (fwd+bwd; training: step/epoch)")
    ax.set_yscale("log")
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
