"""Stores in object storage, against real servers on 127.0.0.1: moto's S3 server and a plain HTTP server with Range support.

Reading by URL, the node-local shard cache, writing to a bucket, and every fault the issue
lists, each with nothing lost, no hang, and a message that names the shard.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

import torchpack
import torchpack.download
from conftest import BACKENDS, EXTENSION, crash_at_second_commit, store_contents
from servers import HTTPServer, S3Server
from torchpack.cli import main as cli
from torchpack.sidecar import SIDECAR_SUFFIX

SHARDS = 3


@pytest.fixture(scope="module")
def s3():
    server = S3Server()
    server.filesystem().mkdir("bucket")
    yield server
    server.stop()


@pytest.fixture
def quick_retries(monkeypatch):
    monkeypatch.setattr(torchpack.download, "RETRIES", 2)
    monkeypatch.setattr(torchpack.download, "BACKOFF_SECONDS", 0.01)


@pytest.fixture(scope="module")
def uploaded(s3, small_tree, tmp_path_factory) -> dict[str, str]:
    """The small tree converted straight into the bucket, as SHARDS shards per backend."""
    stage = tmp_path_factory.mktemp("stage")
    urls = {}
    for backend in BACKENDS:
        dst = f"s3://bucket/small-{backend}/train{EXTENSION[backend]}"
        result = torchpack.convert(small_tree, dst, workers=0, num_shards=SHARDS, storage_options=s3.storage_options, stage_dir=str(stage))
        assert result.stores == [f"s3://bucket/small-{backend}/train-{i:05d}-of-{SHARDS:05d}{EXTENSION[backend]}" for i in range(SHARDS)]
        urls[backend] = f"s3://bucket/small-{backend}/"
    return urls


def local_reference(backend: str, tree: str, tmp_path) -> list:
    store = torchpack.convert(tree, tmp_path / f"local{EXTENSION[backend]}", workers=0, num_shards=SHARDS).stores
    dataset = torchpack.StoreImageFolder(store, decode="tensor")
    return [dataset[i] for i in range(len(dataset))], dataset


# -- reading by URL ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_store_in_a_bucket_reads_as_the_local_store(backend, s3, uploaded, small_tree, tmp_path):
    expected, local = local_reference(backend, small_tree, tmp_path)
    cache = torchpack.ShardCache(tmp_path / "cache")
    dataset_class = {"lmdb": torchpack.LMDBImageFolder, "hdf5": torchpack.HDF5ImageFolder}[backend]
    for root in (uploaded[backend], uploaded[backend] + f"train-*{EXTENSION[backend]}"):  # a folder, a glob
        dataset = dataset_class(root, decode="tensor", storage_options=s3.storage_options, cache=cache)
        assert dataset.classes == local.classes and len(dataset) == len(local)
        assert [p.rsplit("/", 3)[-2:] for p, _ in dataset.samples] == [p.rsplit("/", 3)[-2:] for p, _ in local.samples]
        assert all(torch.equal(dataset[i][0], expected[i][0]) and dataset[i][1] == expected[i][1] for i in range(len(dataset)))
    assert len(os.listdir(cache.shards)) == 2 * SHARDS  # each shard and its download lock, once


@pytest.mark.parametrize("backend", BACKENDS)
def test_opening_reads_only_the_sidecars(backend, s3, uploaded, tmp_path):
    before = sum(s3.gets.values())
    info = torchpack.store_info(uploaded[backend], storage_options=s3.storage_options, cache=torchpack.ShardCache(tmp_path))
    assert info["num_samples"] == 24 and info["shards"] == SHARDS
    assert sum(s3.gets.values()) - before == SHARDS  # the sidecars, no shard
    assert not os.path.exists(os.path.join(tmp_path, "shards"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_cli_info_verify_and_export_take_urls(backend, s3, uploaded, small_tree, tmp_path, capsys):
    options = ["--storage-option", f"endpoint_url={s3.endpoint}", "--storage-option", "key=testing", "--storage-option", "secret=testing"]
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert cli(["info", uploaded[backend], *options, *cache]) == 0
    assert "24 in 3 classes, 3 shard(s)" in capsys.readouterr().out
    assert cli(["verify", uploaded[backend], "--decode", *options, *cache]) == 0
    assert cli(["export", uploaded[backend], str(tmp_path / "out"), *options, *cache]) == 0
    exported = sorted(os.path.relpath(os.path.join(d, f), tmp_path / "out") for d, _, fs in os.walk(tmp_path / "out") for f in fs)
    tree = sorted(os.path.relpath(os.path.join(d, f), small_tree) for d, _, fs in os.walk(small_tree) for f in fs)
    assert exported == tree


@pytest.fixture
def http(small_tree, tmp_path):
    """An HTTP server over a folder holding a sharded LMDB store with its sidecars (copied from a bucket upload)."""
    folder = tmp_path / "www"
    folder.mkdir()
    stores = torchpack.convert(small_tree, folder / "train.lmdb", workers=0, num_shards=SHARDS).stores
    from torchpack.backends import open_reader
    from torchpack.sidecar import encode_sidecar

    for store in stores:
        with open_reader(store) as reader:
            (folder / (os.path.basename(store) + SIDECAR_SUFFIX)).write_bytes(encode_sidecar(reader.header_bytes(), reader.index_bytes()))
    server = HTTPServer(str(folder))
    yield server, stores
    server.stop()


def http_dataset(server: HTTPServer, cache_dir, **kwargs):
    return torchpack.LMDBImageFolder(server.url + "/", decode="tensor", cache=torchpack.ShardCache(cache_dir), **kwargs)


def read_all(dataset) -> list:
    return [dataset[i] for i in range(len(dataset))]


def test_an_https_store_reads_through_range_requests(http, tmp_path):
    server, stores = http
    dataset = http_dataset(server, tmp_path / "cache")
    local = torchpack.LMDBImageFolder(stores, decode="tensor")
    assert all(torch.equal(a[0], b[0]) for a, b in zip(read_all(dataset), read_all(local)))
    assert all(server.gets[f"/{os.path.basename(s)}"] == 1 for s in stores)


# -- faults ---------------------------------------------------------------------------------------


def shard_name(stores, i: int = 1) -> str:
    return "/" + os.path.basename(stores[i])


def test_a_dropped_connection_mid_shard_is_resumed(http, tmp_path, quick_retries, monkeypatch):
    server, stores = http
    monkeypatch.setattr(torchpack.download, "CHUNK_BYTES", 4096)  # several ranged requests per shard
    server.faults.drop_after[shard_name(stores)] = 1000
    dataset = http_dataset(server, tmp_path / "cache")
    local = torchpack.LMDBImageFolder(stores, decode="tensor")
    assert all(torch.equal(a[0], b[0]) for a, b in zip(read_all(dataset), read_all(local)))


def test_a_shard_downloads_over_several_connections_at_once(http, tmp_path, monkeypatch):
    # One request's round trip overlaps the other's transfer, so a lone download keeps the link busy.
    server, stores = http
    monkeypatch.setattr(torchpack.download, "CHUNK_BYTES", 4096)
    server.faults.delay[shard_name(stores)] = 0.05  # each answer waits, so the two requests surely overlap
    dataset = http_dataset(server, tmp_path / "cache")
    local = torchpack.LMDBImageFolder(stores, decode="tensor")
    assert all(torch.equal(a[0], b[0]) for a, b in zip(read_all(dataset), read_all(local)))
    assert server.gets[shard_name(stores)] >= 3
    assert server.most_in_flight[shard_name(stores)] == torchpack.download.STREAMS >= 2


def test_server_errors_are_retried_then_named(http, tmp_path, quick_retries):
    server, stores = http
    server.faults.statuses[shard_name(stores)] = [503, 500]  # two failures, then it answers
    dataset = http_dataset(server, tmp_path / "cache")
    assert len(read_all(dataset)) == 24
    server.faults.statuses[shard_name(stores, 2)] = [503] * 10  # it never answers
    dataset = http_dataset(server, tmp_path / "cache2")
    started = time.monotonic()
    with pytest.raises(torchpack.BadSampleError, match=rf"Could not download .*{os.path.basename(stores[2])}.*3 attempts"):
        read_all(dataset)
    assert time.monotonic() - started < 30  # no hang


def test_a_chunk_that_gives_up_ends_the_download_with_its_own_error(http, tmp_path, quick_retries, monkeypatch):
    # Several chunks in flight, all refused: one gives up after its retries, the others stop
    # retrying, and the error the reader sees is the one that gave up, naming the shard.
    server, stores = http
    monkeypatch.setattr(torchpack.download, "CHUNK_BYTES", 4096)
    server.faults.statuses[shard_name(stores, 2)] = [503] * 1000
    dataset = http_dataset(server, tmp_path / "cache")
    with pytest.raises(torchpack.BadSampleError, match=rf"Could not download .*{os.path.basename(stores[2])}.*3 attempts in a row"):
        read_all(dataset)
    assert server.gets[shard_name(stores, 2)] < 4 * torchpack.download.STREAMS  # no chunk went on retrying
    cached = tmp_path / "cache"
    assert len(list(cached.rglob("*.lmdb"))) == 2 and not list(cached.rglob("*.tmp-*"))  # shards 0 and 1 only


def test_a_slow_server_times_out_with_a_named_error(http, tmp_path, quick_retries):
    import aiohttp

    server, stores = http
    server.faults.delay[shard_name(stores, 0)] = 3.0
    options = {"client_kwargs": {"timeout": aiohttp.ClientTimeout(total=0.5)}}
    dataset = http_dataset(server, tmp_path / "cache", storage_options=options)
    with pytest.raises(torchpack.BadSampleError, match=rf"Could not download .*{os.path.basename(stores[0])}"):
        dataset[0]


def test_a_corrupted_download_is_never_cached(http, tmp_path, quick_retries):
    server, stores = http
    sample = store_contents(stores[1])[2][3]
    server.faults.flip[shard_name(stores)] = open(stores[1], "rb").read().find(sample) + len(sample) // 2  # in a sample
    dataset = http_dataset(server, tmp_path / "cache")
    with pytest.raises(torchpack.BadSampleError, match=rf"download of .*{os.path.basename(stores[1])} is damaged"):
        read_all(dataset)
    assert len([n for n in os.listdir(tmp_path / "cache" / "shards") if n.endswith(".lmdb")]) == 1  # shard 0 only
    server.faults.clear()
    assert len(read_all(http_dataset(server, tmp_path / "cache"))) == 24  # read again: downloaded again, whole


def test_a_store_replaced_under_a_cache_is_never_mixed(http, small_tree, tmp_path):
    server, stores = http
    old = http_dataset(server, tmp_path / "cache")
    first = old[0][0]
    # The store is replaced: another conversion (a re-encoded one), same names.
    folder = os.path.dirname(stores[0])
    (tmp_path / "new").mkdir()
    replacement = torchpack.convert(small_tree, tmp_path / "new" / "train.lmdb", workers=0, num_shards=SHARDS, storage="reencode", quality=50).stores
    from torchpack.backends import open_reader
    from torchpack.sidecar import encode_sidecar

    for store in replacement:
        shutil.copy(store, os.path.join(folder, os.path.basename(store)))
        with open_reader(store) as reader:
            with open(os.path.join(folder, os.path.basename(store) + SIDECAR_SUFFIX), "wb") as f:
                f.write(encode_sidecar(reader.header_bytes(), reader.index_bytes()))
    assert torch.equal(old[0][0], first)  # its cached shard: still the old store, whole
    with pytest.raises(torchpack.BadSampleError, match="changed after this dataset was opened"):
        old[len(old) - 1]  # a shard it never cached: refused, not mixed
    new = http_dataset(server, tmp_path / "cache")
    assert not torch.equal(new[0][0], first) and len(read_all(new)) == 24


CHILD = """
import sys, torchpack
dataset = torchpack.LMDBImageFolder(sys.argv[1], cache=torchpack.ShardCache(sys.argv[2]))
print(len([dataset[i] for i in range(len(dataset))]), flush=True)
"""


def test_two_processes_racing_for_a_shard_download_it_once(http, tmp_path):
    server, stores = http
    server.faults.delay[".lmdb"] = 0.5  # both ask while the first download is running
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, server.url + "/", str(tmp_path / "cache")], stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0].decode().strip() for p in procs]
    assert outputs == ["24", "24"]
    assert [server.gets[f"/{os.path.basename(s)}"] for s in stores] == [1] * SHARDS


def test_a_process_killed_while_it_holds_a_cache_lock(http, tmp_path):
    server, stores = http
    server.faults.delay[".lmdb"] = 30.0  # its download never ends
    killed = subprocess.Popen([sys.executable, "-c", CHILD, server.url + "/", str(tmp_path / "cache")])
    shards = tmp_path / "cache" / "shards"
    deadline = time.monotonic() + 60
    while not (shards.exists() and any(".tmp-" in name for name in os.listdir(shards))):
        assert time.monotonic() < deadline, "the first download did not start"
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    server.faults.clear()
    assert len(read_all(http_dataset(server, tmp_path / "cache"))) == 24  # the lock died with it; its partial file is gone
    assert not any(".tmp-" in name for name in os.listdir(shards))


def test_a_full_cache_disk_is_named_and_loses_nothing(http, tmp_path):
    server, stores = http
    code = f"""
import resource, signal, sys, torchpack
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
dataset = torchpack.LMDBImageFolder({server.url + '/'!r}, cache=torchpack.ShardCache({str(tmp_path / 'cache')!r}))
dataset[0]
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "The shard cache's disk is full" in done.stderr and os.path.basename(stores[0]) in done.stderr
    assert len(read_all(http_dataset(server, tmp_path / "cache"))) == 24  # nothing half-written was kept


# -- the cache limit -------------------------------------------------------------------------------


def test_a_limit_below_one_window_raises_at_once_naming_the_size(http, tmp_path):
    server, stores = http
    sizes = sorted((os.path.getsize(s) for s in stores), reverse=True)
    dataset = torchpack.LMDBImageFolder(server.url + "/", cache=torchpack.ShardCache(tmp_path / "cache", limit=sizes[0]))
    with pytest.raises(torchpack.CacheFullError, match=rf"needs at once .* up to {sizes[0] + sizes[1]} bytes"):
        torchpack.ShardWindowSampler(dataset, window=1, prefetch=1)
    torchpack.ShardWindowSampler(dataset, window=1, prefetch=0)  # one shard at a time fits


def test_eviction_is_least_recently_used_and_spares_shards_in_use(http, tmp_path):
    server, stores = http
    sizes = [os.path.getsize(s) for s in stores]
    cache = torchpack.ShardCache(tmp_path / "cache", limit=sizes[0] + sizes[1] + max(sizes) // 2)
    dataset = http_dataset(server, tmp_path / "cache")
    dataset._handles.max_open = 1  # read one shard at a time
    reader = torchpack.LMDBImageFolder(server.url + "/", cache=cache, decode="tensor")
    shard_of = reader.index_shards()
    first = [i for i in range(len(reader)) if shard_of[i] == 0]
    reader[first[0]]  # shard 0 open (pinned) in this process
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, torchpack\n"
         f"d = torchpack.LMDBImageFolder({server.url + '/'!r}, cache=torchpack.ShardCache({str(tmp_path / 'cache')!r}))\n"
         f"d[{[i for i in range(len(reader)) if shard_of[i] == 1][0]}]\nprint('open', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().decode().strip() == "open"  # shard 1 pinned by another process
        last = [i for i in range(len(reader)) if shard_of[i] == 2]
        with pytest.raises(torchpack.BadSampleError, match=r"cannot make room .* It needs at least"):
            reader[last[0]]  # both others are in use: no room, an error at once (no deadlock)
    finally:
        holder.kill()
        holder.wait()
    assert len([reader[i] for i in range(len(reader))]) == 24  # now shard 1 can go
    cached = [n for n in os.listdir(cache.shards) if n.endswith(".lmdb")]
    assert len(cached) == 2


# -- a shard-aware order across nodes, ranks and workers ---------------------------------------------


RANK = """
import json, sys, torch, torchpack
url, cache_dir, rank, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
dataset = torchpack.StoreImageFolder(url, cache=torchpack.ShardCache(cache_dir), transform=lambda image: 0)
sampler = torchpack.ShardWindowSampler(dataset, num_replicas=4, rank=rank, window=2, prefetch=1, seed=7)
seen = []
for epoch in range(2):
    sampler.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, sampler=sampler, num_workers=2,
                                         collate_fn=lambda batch: [t for _, t in batch])
    batches = list(loader)
    seen.append(list(sampler.plan()[0].tolist()))
json.dump({"seen": seen}, open(out, "w"))
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_nodes_two_ranks_two_workers_see_each_sample_once_with_one_download_per_node(backend, s3, uploaded, tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    env = {**os.environ, **s3.env}
    before = {key: n for key, n in s3.gets.items()}
    procs = []
    for rank in range(4):
        node_cache = tmp_path / f"node{rank // 2}"
        procs.append(subprocess.Popen([sys.executable, str(script), uploaded[backend], str(node_cache), str(rank), str(tmp_path / f"r{rank}.json")], env=env))
    assert [p.wait(timeout=300) for p in procs] == [0] * 4
    import json

    for epoch in range(2):
        seen = sorted(i for rank in range(4) for i in json.load(open(tmp_path / f"r{rank}.json"))["seen"][epoch])
        assert seen == list(range(24))
    prefix = uploaded[backend][len("s3://") :]
    downloads = {key: n - before.get(key, 0) for key, n in s3.gets.items() if key.startswith(prefix) and key.endswith(EXTENSION[backend])}
    cached = [name for node in (0, 1) for name in os.listdir(tmp_path / f"node{node}" / "shards") if name.endswith(EXTENSION[backend])]
    # Each shard a node needed was downloaded once for that node, over both epochs: the server
    # sent each shard as many times as there are node caches holding it, at most one per node.
    assert sum(downloads.values()) == len(cached) and max(downloads.values()) <= 2 and len(downloads) == SHARDS


# -- writing to a bucket -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_array_job_writes_each_shard_and_a_crash_never_uploads_half_a_shard(backend, s3, small_tree, tmp_path, monkeypatch):
    dst = f"s3://bucket/jobs-{backend}/train{EXTENSION[backend]}"
    fs = s3.filesystem()
    common = {"workers": 0, "num_shards": SHARDS, "storage_options": s3.storage_options, "stage_dir": str(tmp_path / "stage"), "commit_every": 3}
    torchpack.convert(small_tree, dst, shard_index=0, **common)
    with crash_at_second_commit(monkeypatch, backend):
        torchpack.convert(small_tree, dst, shard_index=1, **common)
    listed = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"bucket/jobs-{backend}", refresh=True))
    assert listed == [f"train-00000-of-00003{EXTENSION[backend]}", f"train-00000-of-00003{EXTENSION[backend]}.index"]
    resumed = torchpack.convert(small_tree, dst, shard_index=1, resume=True, **common)
    assert resumed.resumed_from > 0
    torchpack.convert(small_tree, dst, shard_index=2, **common)
    dataset = torchpack.StoreImageFolder(f"s3://bucket/jobs-{backend}/", storage_options=s3.storage_options, cache=torchpack.ShardCache(tmp_path / "c"))
    local = torchpack.StoreImageFolder(torchpack.convert(small_tree, tmp_path / f"l{EXTENSION[backend]}", workers=0, num_shards=SHARDS).stores)
    assert len(dataset) == 24 and [dataset.relative_path(i) for i in range(24)] == [local.relative_path(i) for i in range(24)]
    with pytest.raises(FileExistsError, match="already exists"):
        torchpack.convert(small_tree, dst, shard_index=2, **common)


def test_the_window_sampler_prefetches_the_next_shards(http, tmp_path):
    server, stores = http
    cache = torchpack.ShardCache(tmp_path / "cache")
    dataset = torchpack.LMDBImageFolder(server.url + "/", cache=cache)
    sampler = torchpack.ShardWindowSampler(dataset, window=1, prefetch=1, seed=4)
    _, windows = sampler.plan()
    first_index = next(iter(sampler))  # entering window 0: its shard and window 1's are asked for
    dataset[first_index]
    upcoming = dataset._index.source.shards[windows[1][2][0]]
    deadline = time.monotonic() + 30
    while not cache.is_cached(upcoming):  # downloaded in the background, before any read of it
        assert time.monotonic() < deadline, "the next window's shard was not prefetched"
        time.sleep(0.02)
    assert server.gets[f"/{upcoming.name}"] == 1
    assert not cache.is_cached(dataset._index.source.shards[windows[2][2][0]])  # no further than prefetch=1


def test_workers_forked_during_a_prefetch_read_every_sample(http, tmp_path):
    server, stores = http
    dataset = http_dataset(server, tmp_path / "cache")
    for store in stores:
        server.faults.delay["/" + os.path.basename(store)] = 0.5  # downloads still in flight when the workers fork
    dataset.prefetch_shards(list(range(len(stores))))  # downloading in this process's threads
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2, timeout=60,
                                         multiprocessing_context="fork", collate_fn=lambda batch: [t for _, t in batch])
    targets = [t for batch in loader for t in batch]  # a worker stuck on an inherited lock: a timeout error
    assert sorted(targets) == sorted(dataset.targets)


def crop8(image):
    return image[:, :8, :8]


def test_spawned_workers_read_a_remote_store(http, tmp_path):
    server, stores = http
    dataset = torchpack.LMDBImageFolder(server.url + "/", decode="tensor", transform=crop8, cache=torchpack.ShardCache(tmp_path / "cache"))
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, num_workers=2, multiprocessing_context="spawn")
    assert sorted(torch.cat([targets for _, targets in loader]).tolist()) == sorted(dataset.targets)


def test_credentials_in_a_url_never_reach_a_message(http, tmp_path, quick_retries):
    server, stores = http
    url = server.url.replace("http://", "http://reader:hunter2@") + "/"
    server.faults.statuses[shard_name(stores, 0)] = [503] * 10
    dataset = torchpack.LMDBImageFolder(url, cache=torchpack.ShardCache(tmp_path / "cache"))
    assert all("hunter2" not in path for path, _ in dataset.samples)
    with pytest.raises(torchpack.BadSampleError) as raised:
        dataset[0]
    assert "Could not download" in str(raised.value) and "hunter2" not in str(raised.value)
