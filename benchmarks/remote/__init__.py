"""bench_remote.py's parts: the throttled server, the stores in the bucket, each system's loaders, the jobs, the HDF5 experiment, the report."""
