"""graphdiff.distributed: data-parallel training equals one process with the same global batch.

The multi-rank tests start real jobs with `mpiexec -n 2` (the [mpi] extra: mpi4py and the mpich wheel's
mpiexec, installed by CI) on the CPU; the NCCL path runs on the CuPy stand-in (marked gpu).
"""
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import graphdiff.distributed as D
from graphdiff.nn.optim import AdamW

ROOT = Path(__file__).resolve().parents[2]
MPIEXEC = Path(sys.executable).parent / "mpiexec"


def _need_mpi():
    pytest.importorskip("mpi4py")
    if not MPIEXEC.exists():
        pytest.skip("no mpiexec beside this Python (pip install 'graphdiff[mpi]')")


def _env():
    path = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])   # (the stand-in's)
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    for var in D.comm.WORLD_SIZE_VARS:       # a test run under a launcher starts its own jobs
        env.pop(var, None)
    return env


def run(args, ranks, cwd, timeout=120):
    cmd = [sys.executable, "-m", "graphdiff", "train", *args]
    if ranks:
        cmd = [str(MPIEXEC), "-n", str(ranks), *cmd]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def flags(model, steps, out):
    size = ["--n-layer", "1", "--n-head", "2"] if model == "gpt" else ["--n-hidden", "16"]
    return ["--corpus", "c.txt", "--model", model, "--steps", str(steps), "--dtype", "float64", "--batch-size", "4",
            "--block-size", "16", "--n-embd", "16", *size, "--lr", "0.01", "--min-lr", "0.01", "--warmup", "0",
            "--eval-every", "10", "--eval-batches", "1", "--sample-chars", "0", "--no-progress", "--out", out]


def params(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k.startswith("model/")}


def assert_same(a, b, rtol=1e-10):
    assert a.keys() == b.keys()
    for k in a:
        scale = max(np.abs(a[k]).max(), 1e-300)
        assert np.abs(a[k] - b[k]).max() / scale <= rtol, k


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("dp")
    rng = random.Random(0)
    words = "the quick brown fox jumps over a lazy dog and then runs far away into the woods".split()
    (d / "c.txt").write_text("\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(300)))
    (d / "other.txt").write_text((d / "c.txt").read_text() + "\nthe end")
    return d


@pytest.fixture(scope="module")
def one_process(work):
    """20 AdamW steps of a float64 GPT in one process (no MPI at all)."""
    r = run(flags("gpt", 20, "one/"), 0, work)
    assert r.returncode == 0, r.stderr
    return params(work / "one" / "ckpt.npz")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["gpt", "rnn"])
def test_two_ranks_equal_one_process(work, model, one_process):
    _need_mpi()
    r2 = run(flags(model, 20, f"two-{model}/"), 2, work)
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.count("saved") == 1                 # rank 0 alone prints and saves
    if model == "gpt":
        single = one_process
    else:
        r1 = run(flags(model, 20, f"one-{model}/"), 0, work)
        assert r1.returncode == 0, r1.stderr
        single = params(work / f"one-{model}" / "ckpt.npz")
    two = params(work / f"two-{model}" / "ckpt.npz")
    assert_same(single, two)


@pytest.mark.slow
@pytest.mark.parametrize("first, then", [(2, 0), (0, 2)])
def test_resume_on_another_number_of_ranks(work, one_process, first, then):
    _need_mpi()
    out = f"resume-{first}-{then}/"
    r = run(flags("gpt", 10, out), first, work)
    assert r.returncode == 0, r.stderr
    r = run(flags("gpt", 20, out) + ["--resume"], then, work)
    assert r.returncode == 0, r.stderr
    assert "resumed" in r.stdout and "at step 10" in r.stdout
    assert_same(one_process, params(work / out / "ckpt.npz"))


@pytest.mark.slow
def test_batch_that_does_not_divide_is_one_line(work):
    _need_mpi()
    args = flags("gpt", 2, "odd/")
    args[args.index("--batch-size") + 1] = "3"
    r = run(args, 2, work)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--batch-size 3" in lines[0] and "2 ranks" in lines[0], r.stderr


@pytest.mark.slow
def test_ranks_with_another_corpus_are_refused(work):
    _need_mpi()
    other = flags("gpt", 2, "mismatch/")
    other[other.index("--corpus") + 1] = "other.txt"
    cmd = [str(MPIEXEC), "-n", "1", sys.executable, "-m", "graphdiff", "train", *flags("gpt", 2, "mismatch/"), ":",
           "-n", "1", sys.executable, "-m", "graphdiff", "train", *other]
    r = subprocess.run(cmd, cwd=work, env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "disagree on the corpus" in lines[0] and "[1]" in lines[0], r.stderr


FAULT = """
import os, signal, sys, numpy as np
import graphdiff as gd
import graphdiff.distributed as D
from graphdiff.nn.optim import AdamW
comm = D.communicator()
g = gd.Graph(); x = g.param("w", np.ones(3)); loss = gd.ops.sum(x * x, name="loss")
opt = D.DistributedOptimizer(AdamW(g.params()), comm)
for step in range(1000):
    g.forward(); g.backward(loss)
    if comm.rank == 1 and step == 3:
        {fault}
    opt.step()
"""


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["raise RuntimeError('rank one broke')", "os.kill(os.getpid(), signal.SIGKILL)"])
def test_a_failing_rank_ends_the_job(work, fault):
    _need_mpi()
    script = work / "fault.py"
    script.write_text(textwrap.dedent(FAULT).replace("{fault}", fault))
    t0 = time.monotonic()
    r = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, str(script)], cwd=work, env=_env(),
                       capture_output=True, text=True, timeout=60)
    assert time.monotonic() - t0 < 30, r.stderr
    assert r.returncode != 0, r.stderr
    if "raise" in fault:
        assert "rank 1 of 2 failed" in r.stderr and "rank one broke" in r.stderr, r.stderr


# --- one process: the API on the single communicator --------------------------------------------------------
def test_scatter_dataset_splits_the_data_among_ranks():
    class Rank:
        def __init__(self, rank, size):
            self.rank, self.size = rank, size
    data = list(range(11))
    for shuffle in (False, True):
        parts = [D.scatter_dataset(data, Rank(r, 3), shuffle=shuffle, seed=4) for r in range(3)]
        assert sorted(sum(parts, [])) == data and [len(p) for p in parts] == [3, 4, 4]
    assert np.array_equal(D.scatter_dataset(np.arange(4), Rank(1, 2)), [2, 3])


def test_distributed_optimizer_on_one_rank_is_the_optimizer():
    import graphdiff as gd
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 2))
    results = []
    for wrap in (False, True):
        g = gd.Graph()
        w = g.param("w", w0.copy())
        loss = gd.ops.sum(gd.ops.tanh(w) * w, name="loss")
        opt = AdamW(g.params(), lr=0.1)
        if wrap:
            opt = D.DistributedOptimizer(opt, D.SingleCommunicator())
        for _ in range(5):
            g.forward()
            g.backward(loss)
            opt.step()
        results.append(np.array(w.value))
    assert np.array_equal(results[0], results[1])


def test_agreement_names_the_difference():
    class Two(D.SingleCommunicator):
        size = 2

        def allgather_obj(self, obj):
            other = dict(obj, vocabulary="x")
            return [obj, other]
    D.check_agreement(D.SingleCommunicator(), corpus=1, vocabulary=[1, 2])
    with pytest.raises(D.DistributedError, match=r"disagree on the vocabulary: rank\(s\) \[1\]"):
        D.check_agreement(Two(), corpus=1, vocabulary=[1, 2])


# --- NCCL, on the CuPy stand-in (or a GPU) ------------------------------------------------------------------
@pytest.mark.gpu
def test_nccl_world_of_one_trains_as_one_process(tmp_path):
    cupy = pytest.importorskip("cupy")
    from graphdiff.lm.checkpoint import build_model
    from graphdiff.lm.tokenizers import CharTokenizer
    from graphdiff.lm.train import Trainer, prepare_data
    comm = D.NCCLCommunicator()
    with pytest.raises(TypeError, match="GPU memory only"):
        comm.allreduce_sum(np.zeros(3))
    a = cupy.asarray(np.arange(5.0))
    assert np.array_equal(comm.allreduce_sum(a).get(), np.arange(5.0))
    text = "\n".join(f"line {i} of the corpus, with words" for i in range(200))
    tok = CharTokenizer.train(text)
    train, val = prepare_data([text], tok)
    cfg = dict(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=8, pad_id=tok.pad_id, seed=1)
    hp = dict(steps=5, batch_size=4, eval_every=5, eval_batches=1)
    runs = []
    for dp in (False, True):
        model = build_model("gpt", cfg, backend="cupy", dtype="float64")
        tr = (D.DataParallelTrainer(model, tok, train, val, comm=comm, **hp) if dp
              else Trainer(model, tok, train, val, **hp))
        tr.fit(progress=False)
        runs.append({k: cupy.asnumpy(v) for k, v in model.state_dict().items()})
    assert_same(*runs, rtol=1e-12)


NCCL_JOB = """
import numpy as np, cupy
import graphdiff.distributed as D
from graphdiff.lm.checkpoint import build_model
from graphdiff.lm.tokenizers import CharTokenizer
from graphdiff.lm.train import Trainer, prepare_data
comm = D.communicator(backend="cupy")                 # auto under mpiexec with backend cupy: NCCL
assert comm.name == "nccl" and comm.size == 2, (comm.name, comm.size)
text = "\\n".join(f"line {i} of the corpus, with words" for i in range(200))
tok = CharTokenizer.train(text)
train, val = prepare_data([text], tok)
cfg = dict(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=8, pad_id=tok.pad_id, seed=1)
hp = dict(steps=5, batch_size=4, eval_every=5, eval_batches=1)
model = build_model("gpt", cfg, backend="cupy", dtype="float64")
D.DataParallelTrainer(model, tok, train, val, comm=comm, **hp).fit(progress=False)
two = {k: cupy.asnumpy(v) for k, v in model.state_dict().items()}
if comm.rank == 0:
    model = build_model("gpt", cfg, backend="cupy", dtype="float64")
    Trainer(model, tok, train, val, **hp).fit(progress=False)
    one = {k: cupy.asnumpy(v) for k, v in model.state_dict().items()}
    print("max relative difference", max(np.abs(one[k] - two[k]).max() / np.abs(one[k]).max() for k in one))
"""


@pytest.mark.gpu
@pytest.mark.slow
def test_nccl_two_ranks_equal_one_process(work):
    """Two ranks through NCCL: on the stand-in, modelled over MPI (see cupy_standin/cupy/_nccl.py); on a
    machine with two GPUs, real NCCL."""
    cupy = pytest.importorskip("cupy")
    _need_mpi()
    if os.environ.get("GRAPHDIFF_CUPY_STANDIN") != "1" and cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("two NCCL ranks need two GPUs")
    script = work / "nccl_job.py"
    script.write_text(NCCL_JOB)
    if os.environ.get("GRAPHDIFF_CUPY_STANDIN") == "1":     # a machine with one GPU: rank 1 has none
        r = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, str(script)], cwd=work,
                           env=dict(_env(), GRAPHDIFF_STANDIN_GPUS="1"), capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "start at most 1 rank(s) per machine for NCCL" in r.stderr, r.stderr
    r = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, str(script)], cwd=work,
                       env=dict(_env(), GRAPHDIFF_STANDIN_GPUS="2"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    diff = float(r.stdout.split("max relative difference")[1])
    assert diff <= 1e-10


@pytest.mark.slow
def test_time_limit_stops_every_rank_at_rank_0s_step(work):
    _need_mpi()
    args = flags("gpt", 100000, "timed/")
    args[args.index("--steps"):args.index("--steps") + 2] = ["--time-limit", "3"]
    r = run(args, 2, work)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("saved") == 1 and "fitting the schedule to --time-limit 3 s" in r.stdout


@pytest.mark.gpu
def test_nccl_collective_that_does_not_finish_aborts_nccl():
    cupy = pytest.importorskip("cupy")
    comm = D.NCCLCommunicator(timeout=0.05)

    class Stuck:                         # a stream whose work never finishes (a peer that died)
        ptr, done = cupy.cuda.get_current_stream().ptr, False
    comm.cupy = type("cupy", (), {"ndarray": cupy.ndarray, "cuda": type("cuda", (), {
        "get_current_stream": staticmethod(lambda: Stuck())})})
    t0 = time.monotonic()
    with pytest.raises(D.DistributedError, match="did not finish in 0.05 s"):
        comm.allreduce_sum(cupy.asarray(np.ones(3)))
    assert time.monotonic() - t0 < 5
    with pytest.raises(cupy.cuda.nccl.NcclError):     # NCCL was aborted: the communicator is unusable
        comm.comm.check_async_error()
