"""Consensus NMF: an ensemble is its members fitted side by side, reads V once per
iteration, and on counts with planted programs finds them and their number."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from counting_store import CountingStore, PassRecorder, chunk_keys
from scipy.optimize import linear_sum_assignment
from zarr.storage import LocalStore

from dnmf import api
from dnmf.api import prepare, run_job
from dnmf.apps.consensus import consensus, consensus_of_rank, local_density
from dnmf.cli.main import main
from dnmf.engine.checkpoint import PAUSE_IN_CHECKPOINT_WRITE
from dnmf.errors import CheckpointMismatch
from dnmf.io.results import read_result

PROGRAMS = 7


def planted_counts(cells=700, genes=280, programs=PROGRAMS, seed=0):
    """Poisson counts of cells mixing a few of ``programs`` gene programs (each a block
    of genes over a flat background): ``(counts, spectra)``."""
    rng = np.random.default_rng(seed)
    spectra = np.full((programs, genes), 0.05)
    block = genes // programs
    for p in range(programs):
        spectra[p, p * block : (p + 1) * block] += rng.gamma(2.0, 1.0, block)
    spectra /= spectra.sum(axis=1, keepdims=True)
    usages = rng.dirichlet(np.full(programs, 0.3), cells) * rng.lognormal(np.log(2000), 0.3, (cells, 1))
    counts = rng.poisson(usages @ spectra).astype(np.float32)
    return counts, spectra


def _cosines(found, planted):
    """Cosine similarity of each planted spectrum with the found one matched to it."""
    unit = lambda A: A / np.linalg.norm(A, axis=1, keepdims=True)  # noqa: E731
    similarity = unit(planted) @ unit(found).T
    rows, columns = linear_sum_assignment(-similarity)
    return similarity[rows, columns]


@pytest.mark.parametrize(
    "rule",
    [
        dict(inner_sweeps=2, extrapolate=True),
        dict(solver="mu", beta_loss="kullback-leibler"),
        dict(solver="mu", beta_loss=1.5),
    ],
    ids=["hals", "kl", "beta1.5"],
)
def test_an_ensemble_is_its_members_fitted_alone(make_matrix, rule):
    """Three factorizations of ranks 2, 3, 4 run as one ensemble of rank 9 give each
    member's own fit: the same iterates as three separate fits, for every loss."""
    X = make_matrix(60, 25, seed=3).astype(np.float64)
    members = [(2, 11), (3, 12), (4, 13)]
    common = dict(init="random", max_iter=15, tol=0, **rule)
    together = run_job(prepare(X, {**common, "n_components": 9}, members=members))
    start = 0
    for k, seed in members:
        alone = run_job(prepare(X, {**common, "n_components": k, "random_state": seed}))
        np.testing.assert_allclose(together.H[start : start + k], alone.H, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(
            together.W[:, start : start + k].compute(), alone.W.compute(), rtol=1e-10, atol=1e-12
        )
        start += k


def test_an_ensemble_resumed_from_its_checkpoint_is_the_uninterrupted_one(make_matrix, tmp_path):
    """Checkpoints record the members; a resume continues each of them bit for bit, and
    refuses a checkpoint of another ensemble."""
    from dnmf.api import Checkpointing
    from dnmf.errors import CheckpointMismatch

    X = make_matrix(60, 25, seed=4).astype(np.float32)
    members = [(2, 21), (3, 22)]
    common = dict(init="random", tol=0, n_components=5)
    whole = run_job(prepare(X, {**common, "max_iter": 12}, members=members))
    first = run_job(
        prepare(X, {**common, "max_iter": 7}, members=members, checkpointing=Checkpointing(tmp_path / "ckpt", every=3))
    )
    assert first.n_iter == 7
    job = prepare(X, {**common, "max_iter": 12}, members=members, checkpointing=Checkpointing(tmp_path / "ckpt"))
    assert job.start.iteration == 7
    resumed = run_job(job)
    np.testing.assert_array_equal(resumed.H, whole.H)
    np.testing.assert_array_equal(resumed.W.compute(), whole.W.compute())
    assert resumed.n_iter == whole.n_iter == 12
    with pytest.raises(
        CheckpointMismatch, match=r"another ensemble .*\[\[2, 21\], \[3, 22\]\], now \[\[2, 21\], \[3, 23\]\]"
    ):
        prepare(
            X, {**common, "max_iter": 12}, members=[(2, 21), (3, 23)], checkpointing=Checkpointing(tmp_path / "ckpt")
        )


def test_the_refit_reports_each_members_loss(make_matrix):
    """A frozen-H solve of stacked dictionaries (a fixed number of updates): each member's
    W and loss are those of its own transform."""
    X = make_matrix(50, 20, seed=4).astype(np.float64)
    rng = np.random.default_rng(0)
    Hs = [rng.random((k, 20)) for k in (2, 5)]
    solve = {"max_iter": 50, "tol": 0}
    both = run_job(
        prepare(X, {**solve, "n_components": 7}, H=np.vstack(Hs), update_H=False, members=[(2, None), (5, None)])
    )
    start = 0
    for H, loss in zip(Hs, both.member_losses):
        alone = run_job(prepare(X, {**solve, "n_components": H.shape[0]}, H=H, update_H=False))
        np.testing.assert_allclose(
            both.W[:, start : start + H.shape[0]].compute(), alone.W.compute(), rtol=1e-9, atol=1e-12
        )
        assert loss == pytest.approx(alone.loss, rel=1e-9)
        start += H.shape[0]
    assert both.loss == pytest.approx(sum(both.member_losses), rel=1e-12)


def test_an_ensemble_reads_each_chunk_once_per_iteration(tmp_path):
    counts, _ = planted_counts(cells=120, genes=40, programs=3)
    path = tmp_path / "v.zarr"
    keys = chunk_keys(zarr.create_array(str(path), data=counts, chunks=(30, 20), zarr_format=3))
    store = CountingStore(LocalStore(str(path), read_only=True))
    V = zarr.open_array(store=store, mode="r")
    store.counts.clear()
    recorder = PassRecorder(store)
    members = [(k, 100 * k + r) for k in (2, 3, 4) for r in range(5)]
    result = run_job(
        prepare(V, {"n_components": 45, "init": "random", "max_iter": 6, "tol": 0, "panel_rows": 60}, members=members),
        callback=recorder,
    )
    assert result.n_iter == 6
    assert store.reads() == {key: 1 + 6 for key in keys}  # the statistics pass, then one pass per iteration
    assert np.all(np.diff(recorder.totals) == len(keys))


def test_local_density_is_the_mean_distance_to_the_nearest_others():
    points = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
    density = local_density(points, 1)
    np.testing.assert_allclose(density, [0.0, np.sqrt(0.4), 0.0, np.sqrt(0.4)])


def test_consensus_of_identical_replicates_is_their_spectra():
    rng = np.random.default_rng(1)
    H = rng.random((3, 30))
    spectra = np.vstack([H * scale for scale in (1.0, 2.0, 0.5, 3.0)])  # scaling does not matter
    found, labels, density, stability, _ = consensus_of_rank(spectra, 3, 4)
    np.testing.assert_allclose(np.sort(found @ np.ones(30)), np.ones(3))
    assert _cosines(found, H).min() > 1 - 1e-12
    assert np.all(labels >= 0) and np.allclose(density, 0, atol=1e-6) and stability > 0.99


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_planted_programs_are_found_and_counted(sparse):
    counts, planted = planted_counts()
    X = sp.csr_matrix(counts) if sparse else counts
    result = consensus(X, range(4, 11), replicates=10)
    report = result.report
    assert report.recommended == PROGRAMS, report.to_dict()
    assert _cosines(result.spectra[PROGRAMS], planted).min() >= 0.95
    assert report.batches == 1 and report.passes < 1 + report.batches * 1001
    assert [s.rank for s in report.scores] == list(range(4, 11))
    errors = [s.relative_error for s in report.scores]
    assert errors[PROGRAMS - 4] < errors[0]  # the refit error falls up to the true rank
    for k in report.ranks:
        assert result.usages[k].shape == (counts.shape[0], k) and np.all(result.usages[k].compute() >= 0)
        np.testing.assert_allclose(result.spectra[k].sum(axis=1), 1.0)


def test_counts_preprocessed_as_cnmf_does_give_the_planted_programs():
    """cNMF's preprocessing (over-dispersed genes, unit variance) out of core: the
    spectra live on the genes kept, each planted program is found on them."""
    counts, planted = planted_counts()
    result = consensus(counts, range(5, 10), replicates=8, preprocess="counts", top_genes=150)
    report, kept = result.report, result.preprocessing
    assert report.recommended == PROGRAMS, report.to_dict()
    assert report.preprocessing["columns"] == kept.columns.tolist() and len(kept.columns) == 150
    assert result.spectra[PROGRAMS].shape == (PROGRAMS, 150)
    assert _cosines(result.spectra[PROGRAMS], planted[:, kept.columns] * kept.scale).min() >= 0.95


def cnmf_results(counts, spectra, columns, refit_usages, beta_loss="frobenius"):
    """cNMF 1.7's ``consensus`` after its median spectra ``spectra`` (k x kept genes),
    transcribed onto scikit-learn as cNMF runs it (``solver="cd"`` for Frobenius, else
    ``"mu"``; its ``tol`` and ``max_iter``): ``(order, spectra_tpm, spectra_score, usages,
    prediction error)``."""
    from sklearn.decomposition import non_negative_factorization
    from sklearn.preprocessing import StandardScaler

    def refit_usage(X, H):
        return non_negative_factorization(
            X,
            H=H,
            update_H=False,
            n_components=H.shape[0],
            tol=1e-4,
            max_iter=1000,
            solver="cd" if beta_loss == "frobenius" else "mu",
            beta_loss=beta_loss,
        )[0]

    X = counts.astype(np.float64)
    norm = X[:, columns] / X[:, columns].std(axis=0, ddof=1)
    rf_usages = refit_usage(norm, spectra)
    error = float(((norm - rf_usages @ spectra) ** 2).sum())
    norm_usages = rf_usages / rf_usages.sum(axis=1, keepdims=True)
    order = np.argsort(-norm_usages.sum(axis=0), kind="stable")
    rf_usages, norm_usages = rf_usages[:, order], norm_usages[:, order]
    totals = X.sum(axis=1, keepdims=True)
    tpm = X / np.where(totals > 0, totals, 1) * 1e6
    spectra_tpm = refit_usage(np.ascontiguousarray(tpm.T), np.ascontiguousarray(norm_usages.T)).T
    scaler = StandardScaler(with_mean=False).fit(tpm)
    var = np.maximum(scaler.var_, 1e-12)
    z = (tpm - scaler.mean_) / np.sqrt(var)
    score = np.linalg.lstsq(rf_usages.T @ rf_usages, rf_usages.T @ z, rcond=None)[0]
    if refit_usages == "tpm":
        norm_tpm = tpm[:, columns] / tpm[:, columns].std(axis=0, ddof=1)
        rf_usages = refit_usage(norm_tpm, spectra_tpm[:, columns] / np.sqrt(scaler.var_[columns]))
    return order, spectra_tpm, score, rf_usages, error


def test_results_in_tpm_units_are_cnmfs():
    """With counts preprocessed, the TPM spectra (every gene), the gene scores and the
    usages (refit against TPM by default, or the normalized counts) are cNMF's from the
    same consensus spectra; the components come in cNMF's order (by share of usage), and
    the cluster labels follow it."""
    counts, planted = planted_counts()
    runs = {
        how: consensus(
            sp.csr_matrix(counts),
            [6, 7],
            replicates=6,
            preprocess="counts",
            top_genes=150,
            panel_rows=128,
            refit_usages=how,
        )
        for how in (None, "normalized")
    }
    result = runs[None]
    assert result.report.refit_usages == "tpm" and runs["normalized"].report.refit_usages == "normalized"
    assert result.report.passes == runs["normalized"].report.passes + 2  # the last refit: statistics + solve
    columns = result.preprocessing.columns
    for k in (6, 7):
        order, spectra_tpm, score, usages, _ = cnmf_results(counts, result.spectra[k], columns, "tpm")
        assert order.tolist() == list(range(k))  # dnmf's order is already cNMF's
        assert result.spectra_tpm[k].shape == result.spectra_score[k].shape == (k, counts.shape[1])
        np.testing.assert_allclose(result.spectra_tpm[k], spectra_tpm, rtol=1e-4, atol=1e-4 * spectra_tpm.max())
        np.testing.assert_allclose(result.spectra_score[k], score, rtol=1e-4, atol=1e-4 * np.abs(score).max())
        np.testing.assert_allclose(result.usages[k].compute(), usages, rtol=1e-4, atol=1e-4 * usages.max())
        normalized = runs["normalized"]
        np.testing.assert_array_equal(normalized.spectra_tpm[k], result.spectra_tpm[k])
        usages = cnmf_results(counts, normalized.spectra[k], columns, "normalized")[3]
        np.testing.assert_allclose(normalized.usages[k].compute(), usages, rtol=1e-4, atol=1e-4 * usages.max())
        unit, labels = result.unit_spectra[k], result.labels[k]
        for j in range(k):
            median = np.median(unit[labels == j], axis=0)
            np.testing.assert_allclose(result.spectra[k][j], median / median.sum(), rtol=1e-12)
    assert _cosines(result.spectra_tpm[PROGRAMS], planted).min() >= 0.95


def test_a_kullback_leibler_consensus_is_cnmfs():
    """With the KL loss (the multiplicative updates throughout): the TPM spectra are
    scikit-learn's KL refit with the usages fixed, the usages its KL refits, and the
    k-selection error cNMF's Frobenius prediction error. (The multiplicative updates
    stop loosely, at tol 1e-4 on the error's decrease per 10 updates, and the usages'
    refit starts and stops per panel: the two tools agree to about 1e-4 of the largest
    value; tests/engine/test_fixed_factor.py checks the solve itself tightly.)"""
    counts, planted = planted_counts(cells=300, genes=90, programs=3, seed=2)
    result = consensus(
        sp.csr_matrix(counts),
        [3],
        replicates=4,
        preprocess="counts",
        top_genes=60,
        panel_rows=128,
        beta_loss="kullback-leibler",
    )
    spectra = result.spectra[3]
    order, spectra_tpm, _, usages, error = cnmf_results(
        counts, spectra, result.preprocessing.columns, "tpm", "kullback-leibler"
    )
    assert order.tolist() == [0, 1, 2]
    np.testing.assert_allclose(result.spectra_tpm[3], spectra_tpm, rtol=1e-3, atol=1e-3 * spectra_tpm.max())
    np.testing.assert_allclose(result.report.scores[0].error, error, rtol=1e-3)
    np.testing.assert_allclose(result.usages[3].compute(), usages, rtol=1e-3, atol=1e-3 * usages.max())
    assert _cosines(result.spectra_tpm[3], planted).min() >= 0.95


def test_without_preprocessing_the_components_come_by_share_of_usage():
    counts, _ = planted_counts(cells=200, genes=60, programs=3, seed=2)
    result = consensus(counts, [3, 4], replicates=4, max_iter=100)
    assert result.spectra_tpm is None and result.report.refit_usages == "input"
    for k in (3, 4):
        usages = result.usages[k].compute()
        shares = (usages / usages.sum(axis=1, keepdims=True)).sum(axis=0)
        assert np.all(np.diff(shares) <= 0)


def test_small_batches_give_the_same_consensus_as_one():
    counts, _ = planted_counts(cells=200, genes=60, programs=3, seed=2)
    one = consensus(counts, [2, 3], replicates=4, max_iter=50)
    many = consensus(counts, [2, 3], replicates=4, max_iter=50, batch_bytes=1)
    assert one.report.batches == 1 and many.report.batches == 8
    for k in (2, 3):
        assert _cosines(one.spectra[k], many.spectra[k]).min() > 0.99


class Crash(Exception):
    """Stands for the end of a killed process."""


def test_an_interrupted_consensus_resumes_to_the_uninterrupted_result(tmp_path):
    """Interrupted inside its third batch (after that batch's first checkpoint), a
    checkpointed consensus resumes: finished batches are not fitted again, the running
    one continues from its checkpoint, and every output is the uninterrupted run's."""
    counts, _ = planted_counts(cells=200, genes=60, programs=3, seed=2)
    options = dict(replicates=4, max_iter=40, tol=0, batch_bytes=1)  # 8 batches of one fit each
    whole = consensus(counts, [2, 3], **options)
    iterations = []

    def crash_in_third_batch(info):
        iterations.append(info)
        if sum(item is None for item in iterations) == 2 and info is not None and info.iteration == 7:
            raise Crash

    with pytest.raises(Crash):
        consensus(
            counts,
            [2, 3],
            checkpoint=api.Checkpointing(tmp_path / "run", every=5),
            callback=crash_in_third_batch,
            **options,
        )
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "batch-0001",
        "batch-0002",
        "batch-0003.ckpt",
        "consensus-run.json",
    ]
    resumed_iterations = []
    resumed = consensus(counts, [2, 3], checkpoint=tmp_path / "run", callback=resumed_iterations.append, **options)
    # batch 3 resumed from its checkpoint at iteration 5; batches 4..8 in full
    assert [info.iteration for info in resumed_iterations if info is not None][:2] == [6, 7]
    assert sum(info is not None for info in resumed_iterations) == 35 + 5 * 40
    for k in (2, 3):
        np.testing.assert_array_equal(resumed.spectra[k], whole.spectra[k])
        np.testing.assert_array_equal(resumed.unit_spectra[k], whole.unit_spectra[k])
        np.testing.assert_array_equal(resumed.usages[k].compute(), whole.usages[k].compute())
    as_run = lambda report: {**report.to_dict(), "seconds": None}  # noqa: E731
    assert as_run(resumed.report) == as_run(whole.report)
    with pytest.raises(CheckpointMismatch, match="the consensus differs .*replicates: checkpoint 4, now 5"):
        consensus(counts, [2, 3], checkpoint=tmp_path / "run", **{**options, "replicates": 5})
    with pytest.raises(CheckpointMismatch, match="another matrix"):
        consensus(counts[::-1].copy(), [2, 3], checkpoint=tmp_path / "run", **options)


def test_kill_9_during_a_consensus_then_resume_equals_an_uninterrupted_run(tmp_path, capsys):
    """``dnmf consensus --checkpoint`` killed while its second batch writes a checkpoint;
    ``dnmf resume CKPT`` ends with the files of a run never interrupted."""
    counts, _ = planted_counts(cells=200, genes=60, programs=3, seed=2)
    source = tmp_path / "counts.npy"
    np.save(source, counts)
    options = [
        "--ranks",
        "2:3",
        "--replicates",
        "2",
        "--max-iter",
        "20",
        "--tol",
        "0",
        "--batch-memory",
        "1",
        "--threads",
        "-q",
    ]  # four batches of one fit each
    assert main(["consensus", str(source), "--out", str(tmp_path / "reference"), *options]) == 0
    out, ckpt = tmp_path / "out", tmp_path / "run.ckpt"
    command = [
        sys.executable,
        "-m",
        "dnmf.cli",
        "consensus",
        str(source),
        "--out",
        str(out),
        "--checkpoint",
        str(ckpt),
        "--checkpoint-every",
        "4",
        *options,
    ]
    pause = {**os.environ, PAUSE_IN_CHECKPOINT_WRITE: "1@8"}  # in every batch's save of iteration 8
    process = subprocess.Popen(command, env=pause, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (ckpt / "batch-0002.ckpt" / "ckpt-000008").exists():
            assert process.poll() is None, "the run ended before it could be killed:\n" + process.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint of the second batch in time"
            time.sleep(0.02)
        process.kill()
    finally:
        process.communicate()
    assert process.returncode == -signal.SIGKILL and not out.exists()
    assert (ckpt / "batch-0001" / "H.npy").exists() and not (ckpt / "batch-0002").exists()
    capsys.readouterr()
    assert main(["resume", str(ckpt), "--max-iter", "5"]) == 2
    assert "--max-iter, --from and --storage-options do not apply to a consensus" in capsys.readouterr().err
    assert main(["resume", str(ckpt), "-q"]) == 0, capsys.readouterr().err
    as_run = lambda path: {**json.loads(path.read_text()), "seconds": None}  # noqa: E731
    assert as_run(out / "consensus.json") == as_run(tmp_path / "reference" / "consensus.json")
    for k in (2, 3):
        resumed, reference = read_result(out / f"k{k}.zarr"), read_result(tmp_path / "reference" / f"k{k}.zarr")
        np.testing.assert_array_equal(np.asarray(resumed.H), np.asarray(reference.H))
        np.testing.assert_array_equal(np.asarray(resumed.W), np.asarray(reference.W))
    assert sorted(p.name for p in ckpt.iterdir()) == [*(f"batch-{i:04d}" for i in range(1, 5)), "consensus-run.json"]


def test_cli_writes_the_directory_and_refuses_bad_options(tmp_path, capsys):
    counts, _ = planted_counts(cells=200, genes=60, programs=3, seed=2)
    source = tmp_path / "counts.npy"
    np.save(source, counts)
    out = tmp_path / "cnmf"
    status = main(
        [
            "consensus",
            str(source),
            "--ranks",
            "2:4",
            "--replicates",
            "4",
            "--out",
            str(out),
            "--max-iter",
            "100",
            "--threads",
            "-q",
        ]
    )
    assert status == 0, capsys.readouterr().err
    report = json.loads((out / "consensus.json").read_text())
    assert [s["rank"] for s in report["scores"]] == [2, 3, 4]
    assert (out / "k_selection.png").stat().st_size > 0
    assert report["preprocessing"] == {"kind": "none"}
    for k in (2, 3, 4):
        fitted = read_result(out / f"k{k}.zarr")
        assert fitted.H.shape == (k, 60) and fitted.W.shape == (200, k)
        assert (out / f"k{k}.density.png").exists() and (out / f"k{k}.clustering.png").exists()
    import anndata

    cells, genes = [f"cell{i}" for i in range(200)], [f"gene{j}" for j in range(60)]
    import pandas as pd

    anndata.AnnData(
        sp.csr_matrix(counts.astype(np.int32)), obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=genes)
    ).write_h5ad(tmp_path / "counts.h5ad")
    status = main(
        [
            "consensus",
            str(tmp_path / "counts.h5ad"),
            "--ranks",
            "2:3",
            "--replicates",
            "3",
            "--preprocess",
            "counts",
            "--top-genes",
            "40",
            "--format",
            "h5ad",
            "--out",
            str(tmp_path / "pre"),
            "--max-iter",
            "50",
            "--threads",
            "-q",
        ]
    )
    assert status == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "pre" / "consensus.json").read_text())
    assert report["preprocessing"]["kind"] == "counts" and len(report["preprocessing"]["columns"]) == 40
    written = anndata.read_h5ad(tmp_path / "pre" / "k3.h5ad")
    assert list(written.obs_names) == cells
    assert list(written.var_names) == [genes[j] for j in report["preprocessing"]["columns"]]
    assert written.obsm["X_nmf"].shape == (200, 3) and written.varm["NMF_components"].shape == (40, 3)
    for name in ("spectra_tpm", "spectra_score"):  # cNMF's tables: every gene, programs numbered from 1
        table = pd.read_csv(tmp_path / "pre" / f"k3.{name}.tsv", sep="\t", index_col=0)
        assert list(table.columns) == genes and list(table.index) == [1, 2, 3]
        assert np.isfinite(table.to_numpy()).all()
    assert not list(out.glob("*.tsv"))  # no TPM without --preprocess counts
    capsys.readouterr()
    assert main(["consensus", "--help"]) == 0
    assert "V). [default: 1000]" in " ".join(capsys.readouterr().out.split())  # --max-iter: cNMF's 1000
    for args, fragment in [
        (["--ranks", "2:61"], "ranks must be within 1..60"),
        (["--replicates", "1"], "--replicates must be an integer >= 2"),
        (["--density-threshold", "0"], "--density-threshold must be in (0, 2]"),
        (["--density-threshold", "2.5"], "--density-threshold must be in (0, 2]"),
        (["--neighbors", "1.5"], "--neighbors must be in (0, 1]"),
        (["--preprocess", "counts", "--top-genes", "0"], "--top-genes must be an integer >= 1"),
        (["--preprocess", "counts", "--top-genes", "2", "--ranks", "2:3"], "ranks must be within 1..2"),
        (["--top-genes", "20"], "--top-genes applies with --preprocess counts"),
        (["--preprocess", "tpm"], "'tpm' is not one of"),
        (["--refit-usages", "tpm"], "--refit-usages applies with --preprocess counts"),
        (["--preprocess", "counts", "--refit-usages", "raw"], "'raw' is not one of"),
        (["--beta-loss", "kullback-leibler", "--solver", "cd"], "--solver cd does not handle"),
        (["--checkpoint-every", "3"], "--checkpoint-every and --checkpoint-seconds apply with --checkpoint CKPT"),
        (["--batch-memory", "lots"], "'lots' is not a size such as 4GiB"),
        (
            ["--checkpoint", "s3://bucket/run.ckpt"],
            "--checkpoint s3://bucket/run.ckpt: a consensus checkpoints to a local directory only",
        ),
        (["--checkpoint", str(tmp_path)], "holds other files and no consensus-run.json; use an empty directory"),
    ]:
        target = tmp_path / "never"
        options = {"--ranks": "2:3", "--replicates": "3", **dict(zip(args[::2], args[1::2]))}
        status = main(
            [
                "consensus",
                str(source),
                *[x for pair in options.items() for x in pair],
                "--out",
                str(target),
                "--threads",
                "-q",
            ]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 2 and len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
        assert not target.exists()
