"""``graftsearch cache``: build (or reuse) the GAP feature cache, or describe one."""

from __future__ import annotations

import argparse
import json

from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from graftsearch._utils.errors import CacheError
from graftsearch.pipeline._settings import build_part, cache_kwargs, prepare_data
from graftsearch.taps._records import MIB
from ._common import (CACHE_SETTINGS, DATA_SETTINGS, DONOR_SETTINGS, add_settings, console,
                      console_err, donor_spec, settings_values)


def register(sub) -> None:
    p = sub.add_parser(
        "cache", help="extract and cache the GAP features of every tap, or describe a cache",
        description="Run every image of the data once through the donor's trunk and store the "
                    "global average pool of every candidate tap, split by split, in a cache keyed "
                    "by the fingerprint of all inputs. A finished cache is reused without any "
                    "forward pass; an interrupted one resumes. The flags it shares with "
                    "`graftsearch run` mean the same and have the same defaults, so the same "
                    "flags build the cache that run uses.")
    add_settings(p.add_argument_group("donor"), DONOR_SETTINGS)
    add_settings(p.add_argument_group("data"), DATA_SETTINGS)
    g = p.add_argument_group("cache")
    add_settings(g, CACHE_SETTINGS)
    g.add_argument("--shard", default=None, metavar="I/N",
                   help="extract only shard I of N (0 <= I < N), then --merge once all are done")
    g.add_argument("--merge", action="store_true",
                   help="check that every shard is present and consistent and finish the cache")
    g.add_argument("--info", default=None, metavar="DIR",
                   help="describe the cache in DIR (or list the caches under a cache root)")
    g.add_argument("--json", action="store_true", help="with --info: print JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.info is not None:
        return _info(args.info, as_json=args.json)
    values = settings_values(args)
    spec = build_part("data", values)
    options = {**cache_kwargs(values), "shard": args.shard, "merge": args.merge}
    donor_part = donor_spec(values)
    # The stages load here, not with the parser: --help and argument errors stay free of torch.
    from graftsearch.data import load_dataset
    from graftsearch.donors._zoo import load_donor
    from graftsearch.features._cache import CacheShard, build_cache

    donor = load_donor(donor_part)
    console().print(f"donor {donor.name}: {donor.weights_text}", highlight=False, soft_wrap=True,
                    markup=False)
    prepare_data(values["data"])
    with _bar("download") as (bar, callback):
        dataset = load_dataset(spec, progress=callback, skip_missing=values["skip_bad_images"])
    with _bar("cache") as (bar, callback):
        result = build_cache(donor, dataset, **options, progress=callback)
    if isinstance(result, CacheShard):
        i, n = result.shard
        console().print(f"shard {i}/{n} done: {result.chunks_done} of {result.chunks_total} "
                        f"chunks of {result.path} are present.", highlight=False, soft_wrap=True,
                        markup=False)
        if result.complete:
            console().print("All shards are present: run the same command with `--merge` "
                            "instead of `--shard` to finish the cache.", highlight=False,
                            soft_wrap=True, markup=False)
        else:
            console().print("Run the other shards, then the same command with `--merge`.",
                            highlight=False, soft_wrap=True, markup=False)
        return 0
    _print_cache(result)
    return 0


class _bar:
    """A rich progress bar fed by the library's progress callback (images/s or bytes)."""

    def __init__(self, stage: str):
        self.stage = stage
        self.progress = None
        self.task = None

    def __enter__(self):
        return self, self.callback

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()
        return False

    def callback(self, event) -> None:
        if self.progress is None:
            if self.stage == "download":
                from rich.progress import DownloadColumn, TransferSpeedColumn

                columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                           TransferSpeedColumn(), TimeRemainingColumn()]
            else:
                columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                           TimeRemainingColumn()]
            self.progress = Progress(*columns, console=console_err(), transient=False)
            self.progress.start()
            self.task = self.progress.add_task(self.stage, total=event.total, rate="")
        rate = event.info.get("images_per_s")
        description = (f"{self.stage} {event.message}" if self.stage == "download"
                       else f"{self.stage} {event.info.get('split', '')}".strip())
        self.progress.update(self.task, completed=event.done, total=event.total,
                             description=description,
                             rate=f"{rate:,.1f} images/s" if rate else "")


def _print_cache(cache) -> None:
    from graftsearch.features._cache import describe

    d = describe(cache)
    n = sum(d["images"].values())
    out = console()
    out.print(f"feature cache: {d['path']}", highlight=False, soft_wrap=True, markup=False)
    out.print(f"  donor {d['donor']} (weights sha256 {d['donor_weights_sha256'][:16]}...), "
              f"{d['taps']} taps ({d['feature_dim']} features) at {d['image_size']} px, "
              f"{d['dtype']}", highlight=False, soft_wrap=True, markup=False)
    ds = d["dataset"]
    seed = f", seed {ds['seed']}" if "seed" in ds else ""
    out.print(f"  data {ds.get('kind')} {ds.get('root')} ({ds.get('split')} split{seed}), "
              f"{len(d['classes'])} classes",
              highlight=False, soft_wrap=True, markup=False)
    out.print("  images: " + ", ".join(f"{s} {k:,}" for s, k in d["images"].items())
              + (f"; {len(d['skipped'])} skipped (see manifest.json)" if d["skipped"] else ""),
              highlight=False, soft_wrap=True, markup=False)
    out.print(f"  size: {d['nbytes'] / MIB:,.1f} MiB ({d['nbytes'] / max(n, 1):,.0f} bytes per "
              "image)", highlight=False, soft_wrap=True, markup=False)
    out.print(f"  fingerprint: {d['fingerprint']}", highlight=False, soft_wrap=True, markup=False)


def _info(path: str, *, as_json: bool) -> int:
    from pathlib import Path

    from graftsearch.features._cache import FeatureCache, describe, find_caches

    p = Path(path).expanduser()
    if (p / "manifest.json").exists():
        cache = FeatureCache.open(p)
        if as_json:
            console().print_json(json.dumps(describe(cache)))
        else:
            _print_cache(cache)
        return 0
    caches = find_caches(p)
    if not caches:
        raise CacheError(f"'{p}' is neither a feature cache (no manifest.json) nor a directory "
                         "holding caches. Use `--info DIR` with a directory that "
                         "`graftsearch cache` printed.")
    found = []
    for c in caches:
        try:
            found.append(FeatureCache.open(c))
        except CacheError as exc:
            console_err().print(f"[yellow]skipping[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    if as_json:
        console().print_json(json.dumps([describe(c) for c in found]))
        return 0
    for c in found:
        _print_cache(c)
    return 0
