"""Streaming DiLoCo's overlap on a real slow link: per-step wall time with the fragment exchange
overlapped with τ inner steps (as designed), waited for at its launch, and with no communication.

The training run is ``python -m commlab.train.outer --algo streaming_diloco`` (the stacked MLP on
digits, E3M0-quantised fragments all-gathered by ``DistComm.start``, ``async_op=True``), started by
:func:`commlab.comm.netns.run_ranks` as 2 ranks, one per network namespace, joined by a veth pair that
``tc`` shapes to ``--rate`` bit/s each way (needs root and iproute2). Three arms, interleaved in each
repeat (minimum over repeats):

* ``overlap``: the method as designed: launch fragment p, compute τ inner steps, wait;
* ``no overlap``: the same run with ``--no-overlap`` (every background collective waited for at
  its launch; the replicas come out bit-identical, which the script checks);
* ``compute alone``: two concurrent worlds of one process each (the same steps, the same batch, the
  quantiser still runs; its all-gather is a copy inside one process): no link at all. Over the veth,
  two ``python -m commlab.train.outer`` processes outside the namespaces; over loopback, each rank
  on a process group of itself.

Per-step time: the rank-0 wall clock (the log's ``clock``) from the first evaluation after step 0
to the end, over the steps in between (the first ``--eval-every`` steps warm up). ``--smoke`` (and
``--loopback``) run the two ranks as local gloo processes over loopback
(:func:`commlab.comm.launch.run_workers`, all arms in one launch) instead: no root needed, no
shaped link, so the ratios there only check the script. ``--algo co2``
times CO2's overlapped all-reduce of the parameters the same way.

    taskset -c 1 .venv/bin/python benchmarks/streaming_overlap_veth.py --rate 10e6 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch.distributed as dist
from _common import parse_args

from commlab.comm import DistComm
from commlab.comm.launch import run_workers
from commlab.train.outer import parse_config, train_outer

FULL = {"hidden": 1024, "batch-size": 32, "steps": 120, "eval-every": 20, "sync-every": 4, "fragments": 2,
        "overlap-steps": 1}
SMOKE = {"hidden": 32, "batch-size": 8, "steps": 12, "eval-every": 4, "sync-every": 4, "fragments": 2,
         "overlap-steps": 1}
ARMS = ("overlap", "no overlap", "compute alone")


def training_args(algo: str, settings: dict, threads: int) -> list[str]:
    argv = ["--algo", algo, "--threads", str(threads), "--timeout", "120"]
    for key, value in settings.items():
        if algo == "co2" and key in ("fragments", "overlap-steps"):
            continue
        argv += [f"--{key}", str(value)]
    return argv


def per_step(records: list[dict]) -> float:
    """Seconds per inner step between the first record after step 0 and the last."""
    first, last = records[1], records[-1]
    return (last["clock"] - first["clock"]) / (last["step"] - first["step"])


def _loopback_rank(rank: int, world_size: int, argv: list[str], repeats: int) -> list[tuple]:
    """One local gloo rank: every repeat the three arms in turn (alone: a group of this rank only)."""
    solo = [dist.new_group([r]) for r in range(world_size)][rank]
    rounds = []
    for _ in range(repeats):
        overlapped = train_outer(parse_config(argv), DistComm(deterministic=True))
        serial = train_outer(parse_config([*argv, "--no-overlap"]), DistComm(deterministic=True))
        rounds.append((overlapped, serial, per_step(train_outer(parse_config(argv), DistComm(solo)))))
    return rounds


def loopback_rounds(argv: list[str], repeats: int, threads: int) -> Iterator[tuple]:
    """(overlap records, no-overlap records, compute-alone s/step) per repeat, on 2 loopback processes."""
    results = run_workers(_loopback_rank, 2, args=(argv, repeats), timeout=900, threads=threads)
    for r in results:
        if r.status != "ok":
            raise RuntimeError(f"rank {r.rank} ended {r.status}: {r.error}\n{r.traceback}")
    for (overlapped, serial, alone0), (_, _, alone1) in zip(results[0].value, results[1].value, strict=True):
        yield overlapped, serial, max(alone0, alone1)


def veth_rounds(argv: list[str], repeats: int, link, threads: int) -> Iterator[tuple]:
    """The same per repeat over the veth ``link``: two torchrun launches, then two single-process runs."""
    from commlab.comm.netns import run_ranks

    with tempfile.TemporaryDirectory(prefix="streaming-overlap-") as tmp:
        folder = Path(tmp)
        for repeat in range(repeats):
            runs = []
            for port, extra in ((29500 + 2 * repeat, []), (29501 + 2 * repeat, ["--no-overlap"])):
                log = folder / "log.jsonl"
                run_ranks(link, "commlab.train.outer", [*argv, *extra, "--log-file", str(log)], timeout=600,
                          port=port, threads=threads)
                runs.append(_read(log))
            yield runs[0], runs[1], alone(argv, folder, threads)


def _read(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def alone(argv: list[str], folder: Path, threads: int) -> float:
    """Per-step seconds of two concurrent single-process worlds (the slower of the two)."""
    env = {**{k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")},
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    logs = [folder / f"alone{i}.jsonl" for i in (0, 1)]
    processes = [subprocess.Popen([sys.executable, "-m", "commlab.train.outer", *argv, "--log-file", str(log)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for log in logs]
    for process in processes:
        _, err = process.communicate(timeout=600)
        if process.returncode != 0:
            raise RuntimeError(f"a single-process run exited {process.returncode}:\n{err[-2000:]}")
    return max(per_step(_read(log)) for log in logs)


def best_of(rounds: Iterable[tuple]) -> dict[str, float]:
    """Minimum per-step seconds of each arm over the repeats (printed as they come), and the exchange size."""
    best = dict.fromkeys(ARMS, float("inf"))
    for repeat, (overlapped, serial, alone_time) in enumerate(rounds):
        if [r["hashes"] for r in overlapped] != [r["hashes"] for r in serial]:
            raise RuntimeError("--no-overlap changed the replicas; it must change only the timing")
        times = {"overlap": per_step(overlapped), "no overlap": per_step(serial), "compute alone": alone_time}
        print(f"  repeat {repeat}: " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in times.items()), flush=True)
        best = {k: min(best[k], times[k]) for k in ARMS}
    best["bytes per sync"] = overlapped[-1]["peak_bytes_per_sync"]
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10e6, help="veth rate each way (bit/s)")
    parser.add_argument("--algo", choices=("streaming_diloco", "co2"), default="streaming_diloco")
    parser.add_argument("--hidden", type=int, default=None, help="hidden width (default: the size's)")
    parser.add_argument("--loopback", action="store_true", help="2 local gloo processes over loopback, no veth")
    args = parse_args(parser, threads=1, repeats=3)
    settings = {**(SMOKE if args.smoke else FULL)}
    if args.hidden is not None:
        settings["hidden"] = args.hidden
    argv = training_args(args.algo, settings, args.threads)
    loopback = args.smoke or args.loopback
    where = ("loopback (2 local gloo processes, no shaped link: --smoke/--loopback)" if loopback
             else f"a veth pair shaped to {args.rate / 1e6:g} Mbit/s each way (2 network namespaces)")
    print(f"{args.algo} on 2 ranks over {where}; {args.threads} thread(s) each; {' '.join(argv)}", flush=True)
    if loopback:
        best = best_of(loopback_rounds(argv, args.repeats, args.threads))
    else:
        from commlab.comm.netns import veth_link

        with veth_link(rate=args.rate) as link:
            best = best_of(veth_rounds(argv, args.repeats, link, args.threads))
    wire = best["bytes per sync"] * 8 / args.rate
    print(f"per-step wall time (min of {args.repeats}): " + ", ".join(f"{k} {best[k] * 1e3:.2f} ms" for k in ARMS))
    print(f"one exchange: {best['bytes per sync'] / 1e3:.1f} kB per rank"
          + ("" if loopback else f", {wire * 1e3:.1f} ms on the wire at {args.rate / 1e6:g} Mbit/s"))
    print(f"ratio: {best['overlap'] / best['no overlap']:.3f}x overlap / no overlap, "
          f"{best['overlap'] / best['compute alone']:.3f}x overlap / compute alone, "
          f"{best['no overlap'] / best['compute alone']:.3f}x no overlap / compute alone (per-step wall time)")


if __name__ == "__main__":
    main()
