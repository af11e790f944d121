"""Writes benchmark results as CSV, a Markdown table and a PNG plot (atomically)."""
import csv
import io

from mibcore._io import atomic_write_bytes

COLUMNS = [
    "op", "shape", "kind", "provider", "device", "forward_ms", "backward_ms", "full_ms",
    "speedup_full", "speedup_forward", "roofline_full", "saved_MB", "peak_MB",
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
    lines = [
        f"Machine: {machine}. Times are medians in ms; speedups are against the eager `reference` "
        "in the same run; roofline = fraction of the measured copy bandwidth (elementwise ops) or "
        "fp32 GEMM throughput (fusion GEMMs) reached by forward+backward; saved = memory held from "
        "forward to backward: tensors autograd saves beyond the inputs, plus the outputs.",
        "",
        "| op | shape | provider | fwd ms | bwd ms | fwd+bwd ms | speedup fwd+bwd | speedup fwd | roofline | saved MB |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        roof = r.get("roofline_full")
        lines.append(
            f"| {r['op']} | {r['shape']} | {r['provider']} | {_fmt(r['forward_ms'])} | {_fmt(r['backward_ms'])} "
            f"| {_fmt(r['full_ms'])} | {_fmt(r['speedup_full'])}x | {_fmt(r['speedup_forward'])}x "
            f"| {'-' if roof in (None, '') else f'{100 * roof:.0f}%'} | {_fmt(r['saved_MB'])} |"
        )
    return "\n".join(lines) + "\n"


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
            values.append(match[0]["speedup_full"] if match else 0.0)
        ax.bar([c + i * width for c in range(len(cases))], values, width, label=provider)
    ax.set_xticks([c + width * (len(providers) - 1) / 2 for c in range(len(cases))])
    ax.set_xticklabels([f"{op}\n{shape}" for op, shape in cases], fontsize=7)
    ax.set_ylabel("speedup vs eager reference (fwd+bwd)")
    ax.set_yscale("log")
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
