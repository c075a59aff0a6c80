"""Every benchmark in one run: writes bench/results.json and bench/RESULTS.md (the table the
README's Performance section shows).

    python bench/run_all.py            # the full run (about 12 minutes on a 2-core machine); also
                                       # puts the table in the README's Performance section
    python bench/run_all.py --quick    # smaller figures, for a smoke test (README untouched)

(a) acknowledgement latency against a bare bolt app, (b) webhook ingest against a verify-only
endpoint, (c) health fan-out against the slowest probe, (d) the scheduler with 1,000 open
incidents and three workers on PostgreSQL, (e) resident memory of `revops serve` after 10,000
requests, (f) overload: 500 commands at once and commands during a Stripe retry storm, (g) the
scale-out run: 2 × `revops serve` + 3 × `revops worker` on one PostgreSQL with 100 open incidents
on 3 s / 5 s cadences for 60 s against a fake Slack pacing each channel (`--skip-scale-out` leaves
it out and keeps the last run's figures), and the hypothesis fuzzing of every sub-command and of every edge (Slack, /alerts,
Stripe, signed links) with 10,000 examples each (`--fuzz-only` runs just those, `--keep-fuzz`
keeps the last run's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        mem = next(l.split()[1] for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal"))
        mem = f"{int(mem) / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration):
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory": mem, "python": platform.python_version(),
            "load_average": os.getloadavg(), "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def step(name: str, args: list[str], env: dict | None = None) -> tuple[int, str, float]:
    print(f"\n=== {name}: {' '.join(args)}", flush=True)
    started = time.time()
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env={**os.environ, **(env or {})},
                          capture_output=True, text=True)
    print(proc.stdout[-4000:], proc.stderr[-2000:] if proc.returncode else "", flush=True)
    return proc.returncode, proc.stdout, time.time() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep-fuzz", action="store_true",
                        help="keep the fuzzing figures of the last run (bench/results.json) instead of fuzzing again")
    parser.add_argument("--fuzz-only", action="store_true", help="only the fuzzing, stored for a later --keep-fuzz")
    parser.add_argument("--skip-scale-out", action="store_true",
                        help="leave out the scale-out run (about 2 minutes), keeping the last run's figures")
    args = parser.parse_args()
    q = args.quick
    tmp = Path(tempfile.mkdtemp(prefix="revops-bench-"))
    results: dict = {"machine": machine(), "quick": q}
    codes = {}

    if args.fuzz_only:  # the fuzzing alone, into the stored figures (a later run may --keep-fuzz)
        last = _last(BENCH / "results.json")
        fuzz(last, codes, 500 if q else 10_000)
        (BENCH / "results.json").write_text(json.dumps(last, indent=2, default=str))
        return 0 if all(c == 0 for c in codes.values()) else 1

    codes["ack"], _, _ = step("(a) acknowledgement latency", [
        "bench/ack_latency.py", "--db", "both", "--requests", "100" if q else "400", "--json", str(tmp / "ack.json")])
    codes["webhook"], _, _ = step("(b) webhook ingest", [
        "bench/webhook_ingest.py", "--db", "both", "--events", "500" if q else "3000"])
    codes["health"], _, _ = step("(c) health fan-out", [
        "bench/health_fanout.py", "--rounds", "3" if q else "5", "--json", str(tmp / "health.json")])
    codes["scheduler"], _, _ = step("(d) scheduler", [
        "bench/scheduler.py", "--incidents", "200" if q else "1000", "--json", str(tmp / "scheduler.json")])
    codes["memory"], _, _ = step("(e) memory", [
        "bench/memory.py", "--requests", "1000" if q else "10000", "--json", str(tmp / "memory.json")])
    codes["overload"], _, _ = step("(f) overload", [
        "bench/overload.py", "--db", "both", "--burst", "200" if q else "500", "--events", "500" if q else "3000",
        "--json", str(tmp / "overload.json")])
    if not args.skip_scale_out:
        codes["scale_out"], _, _ = step("(g) scale-out", [
            "bench/scale_out.py", "--incidents", "30" if q else "100", "--seconds", "20" if q else "60",
            "--json", str(tmp / "scale_out.json")])
    stored = BENCH / "results.json"
    last = _last(stored)
    if args.keep_fuzz and last.get("fuzz") and last.get("fuzz_edges"):
        results["fuzz"], results["fuzz_edges"] = last["fuzz"], last["fuzz_edges"]
    else:
        fuzz(results, codes, 500 if q else 10_000)

    for key, name in (("ack_latency", "ack"), ("health_fanout", "health"), ("scheduler", "scheduler"),
                      ("memory", "memory"), ("overload", "overload")):
        path = tmp / f"{name}.json"
        results[key] = json.loads(path.read_text()) if path.exists() else None
    results["webhook_ingest"] = _last(stored).get("webhook_ingest")
    scale = tmp / "scale_out.json"
    results["scale_out"] = json.loads(scale.read_text()) if scale.exists() else last.get("scale_out")
    results["exit_codes"] = codes
    stored.write_text(json.dumps(results, indent=2, default=str))
    (BENCH / "RESULTS.md").write_text(markdown(results))
    if not q:
        update_readme(markdown(results))
    print("\n" + markdown(results))
    return 0 if all(c == 0 for c in codes.values()) else 1


README = ROOT / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def update_readme(table: str) -> None:
    """Put the table of a full run between the markers of the README's Performance section."""
    text = README.read_text()
    if START not in text or END not in text:
        print("README.md has no results markers; left as it is")
        return
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{table}{END}{tail}")


def _ack_target(row: dict) -> str:
    words = {"<= 1.3x": "≤ 1.3x", "<= 2.0x": "≤ 2.0x", "< 100 ms": "< 100 ms"}.get(row.get("target", ""), row.get("target", "?"))
    return f"{words} ({'met' if row.get('met') else 'missed'})"


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"Measured {m['when']} on {m['cpus']} CPUs ({m['cpu']}), {m['memory']}, Python {m['python']}, "
             f"load average at start {m['load_average'][0]:.2f}" + (" — quick run" if r.get("quick") else ""), ""]
    lines += ["| benchmark | figure | floor / reference | ratio | target |", "| --- | --- | --- | --- | --- |"]
    for row in (r.get("ack_latency") or {}).get("rows", []):
        lines.append(f"| ack `/revops {row['command']}` ({row.get('db', 'sqlite')}), c={row['concurrency']} | "
                     f"p50 {row['revops_p50_ms']:.1f} ms, "
                     f"p99 {row['revops_p99_ms']:.1f} ms | bare bolt p99 {row['bare-bolt_p99_ms']:.1f} ms "
                     f"(answering at once: {row.get('bolt-immediate_p99_ms', float('nan')):.1f} ms) | "
                     f"{row['p99_ratio']:.2f}x ({row.get('p99_ratio_immediate', float('nan')):.2f}x) | {_ack_target(row)} |")
    for w in r.get("webhook_ingest") or []:
        lines.append(f"| webhook ingest ({w['db']}), c={w['concurrency']}, 10% duplicates | "
                     f"{w['ingest']['rps']:.0f} req/s, lost {w['check']['lost']}, doubled {w['check']['doubled']} | "
                     f"verify-only {w['baseline']['rps']:.0f} req/s | {w['ratio']:.2f}x | ≥ 0.5x |")
    h = r.get("health_fanout")
    if h:
        lines.append(f"| health fan-out, {h['services']} services × {h['delay_ms']:.0f} ms | wall {h['median_wall_ms']} ms | "
                     f"slowest single probe | {h['median_ratio']:.2f}x | ≤ 1.3x |")
    s = r.get("scheduler")
    if s:
        lines.append(f"| scheduler, {s['incidents']} open incidents, {s['workers']} workers (PostgreSQL) | "
                     f"{s['posts_per_s']} posts/s, tick p50 {s['tick_p50_ms']} ms | {s['posts']} posts | "
                     f"duplicates {s['duplicates']} | 0 duplicates |")
    so = r.get("scale_out")
    if so:
        met = so["on_pace_pct"] >= 95 and so["duplicates"] == 0 and so["http_429"] == 0
        lines.append(f"| scale-out: {so['serve']} serve + {so['workers']} workers (PostgreSQL), {so['incidents']} open P1 "
                     f"incidents on 3 s / 5 s cadences, {so['seconds']:.0f} s, Slack 1/s per channel after a burst of 3 | "
                     f"{so['on_pace_pct']} % of {so['slots_due']} slots within one tick of the channel's pace "
                     f"({so['on_time_pct']} % of their slot); catch-ups {so['catch_up_runs']}, duplicates "
                     f"{so['duplicates']}, 429s {so['http_429']}, max {so['max_posts_per_channel_per_s']}/s per channel, "
                     f"tick p99 {so['tick_p99_ms']} ms | load average {so['load_average'][0]} at its start; the revops "
                     f"processes had {100 * so.get('revops_cpu_share', 0):.0f} % of the CPUs | — | ≥ 95 % on time, 0 "
                     f"duplicates, 0 429s ({'met' if met else 'missed'}) |")
    mem = r.get("memory")
    if mem:
        lines.append(f"| memory of `revops serve` after {mem['requests']} requests | {mem['rss_after_mb']} MB RSS | "
                     f"{mem['rss_after_warmup_mb']} MB after warm-up | {mem['growth_after_warmup_mb']:+} MB | no growth |")
    lines += overload_rows(r.get("overload") or [])
    f = r.get("fuzz")
    if f:
        lines.append(f"| fuzzing every sub-command (hypothesis) | {f['examples']} examples | — | "
                     f"{'passed' if f['passed'] else 'FAILED'} | no exception, usage line on bad input |")
    f = r.get("fuzz_edges")
    if f:
        lines.append(f"| fuzzing every edge: Slack bodies and headers, `/alerts`, Stripe envelopes, signed links "
                     f"(SQLite) | {f['examples']} examples each | — | {'passed' if f['passed'] else 'FAILED'} | "
                     f"never a 5xx, nothing logged above WARNING |")
    return "\n".join(lines) + "\n"


def overload_rows(runs: list[dict]) -> list[str]:
    """bench/overload.py's rows: the burst and the mixed load, per database."""
    lines = []
    for o in runs:
        a, v, f, m = o["answers"], o["revops"], o["floor"], o["mixed"]
        load = f", load average {o['load_average']['before'].split()[0]}" if o.get("load_average") else ""
        lines.append(f"| overload: {o['burst']} commands at once ({o['db']}{load}), help/credits/incident status/grant | "
                     f"ack p50 {v['p50_ms']:.0f} ms, p99 {v['p99_ms']:.0f} ms, max {v['max_ms']:.0f} ms; "
                     f"answered in full {a['full']} ({a['inline']} in the ack, {a['working_answered']} on the "
                     f"response_url), refused as overloaded {a['refused']} | bare bolt max {f['max_ms']:.0f} ms "
                     f"(p99 {f['p99_ms']:.0f} ms) | {o['max_ratio']:.2f}x | max < 3 s "
                     f"({'met' if o['burst_met'] else 'missed'}) |")
        lines.append(f"| overload: commands at c=8 during a {m['events']}-event Stripe retry storm at c=16 "
                     f"({o['db']}{load}) | ack p50 {m['loaded']['p50_ms']:.0f} ms, p99 {m['loaded']['p99_ms']:.0f} ms; "
                     f"events lost {m['lost']} | no storm: p99 {m['quiet']['p99_ms']:.0f} ms | "
                     f"{m['p99_ratio']:.2f}x | p99 < 250 ms, 0 lost ({'met' if o['mixed_met'] else 'missed'}) |")
    return lines


def fuzz(results: dict, codes: dict, examples: int) -> None:
    """The hypothesis runs: every sub-command, then every edge (on SQLite; CI runs a few hundred
    examples of each on both databases)."""
    codes["fuzz"], _, secs = step("fuzzing", ["-m", "pytest", "-q", "-p", "no:warnings", "tests/test_fuzz.py"],
                                  env={"REVOPS_FUZZ_EXAMPLES": str(examples)})
    results["fuzz"] = {"examples": examples, "passed": codes["fuzz"] == 0, "seconds": round(secs, 1)}
    codes["fuzz_edges"], _, secs = step("fuzzing the edges", [
        "-m", "pytest", "-q", "-p", "no:warnings", "tests/test_fuzz_edges.py", "-k", "sqlite"],
        env={"REVOPS_FUZZ_EXAMPLES": str(examples)})
    results["fuzz_edges"] = {"examples": examples, "passed": codes["fuzz_edges"] == 0, "seconds": round(secs, 1)}


def _last(stored: Path) -> dict:
    """The figures of the last run (what a step that did not run this time keeps)."""
    try:
        return json.loads(stored.read_text()) if stored.exists() else {}
    except ValueError:
        return {}


if __name__ == "__main__":
    raise SystemExit(main())
