"""
A fit out of core, from Zarr, with its memory
=============================================

dnmf reads V in row panels, once per iteration, and never holds it whole. Here a 400 MB
float32 matrix (100,000 x 1,000, rank 10 plus noise) is written to a Zarr store on disk, and
fitted from there while a thread samples this process's resident memory. ``W`` comes back as a
Dask array, row-chunked like V, still lazy. You will see the memory over the fit against the
size of V.
"""

import shutil
import tempfile
import threading
import time
from pathlib import Path

import dask.array as da
import matplotlib.pyplot as plt
import numpy as np
import psutil
import zarr

import dnmf

M, N, RANK = 100_000, 1_000, 10
where = Path(tempfile.mkdtemp(prefix="dnmf-example-"))
store = zarr.create_array(where / "V.zarr", shape=(M, N), chunks=(10_000, N), dtype="float32")
rng = np.random.default_rng(0)
H_true = rng.gamma(1.0, 1.0, (RANK, N)).astype(np.float32)
for start in range(0, M, 10_000):  # written block by block: V is never in memory either
    W_block = rng.gamma(1.0, 1.0, (10_000, RANK)).astype(np.float32)
    store[start : start + 10_000] = W_block @ H_true + rng.random((10_000, N), dtype=np.float32)
V_bytes = M * N * 4
print(f"V: {M} x {N} float32, {V_bytes / 2**20:.0f} MiB in {where / 'V.zarr'}")

# %%
# Fit from the path while sampling memory every 50 ms.

process = psutil.Process()
samples, done = [], threading.Event()


def sample():
    start = time.perf_counter()
    while not done.is_set():
        samples.append((time.perf_counter() - start, process.memory_info().rss))
        time.sleep(0.05)


baseline = process.memory_info().rss
sampler = threading.Thread(target=sample)
sampler.start()
model = dnmf.NMF(n_components=RANK, random_state=0)
W = model.fit_transform(str(where / "V.zarr"))
done.set()
sampler.join()
print(type(W).__name__, W.shape, W.chunksize, f"- {model.n_iter_} iterations")
print(f"relative error {model.reconstruction_err_ / np.sqrt(da.sum(da.from_zarr(store) ** 2).compute()):.4f}")

# %%
# The process's memory above what it held before the fit, against V's size:

seconds, rss = np.array(samples).T
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(seconds, (rss - baseline) / 2**20, label="memory of the fit (RSS above baseline)")
ax.axhline(V_bytes / 2**20, color="k", linestyle="--", label="V, if it were loaded")
ax.set_xlabel("seconds")
ax.set_ylabel("MiB")
ax.set_ylim(bottom=0)
ax.legend()
fig.tight_layout()
plt.show()
print(f"peak: {(rss.max() - baseline) / 2**20:.0f} MiB above baseline, for a {V_bytes / 2**20:.0f} MiB matrix")

# %%
# The example's files go with it.

shutil.rmtree(where)
