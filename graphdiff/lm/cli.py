"""`graphdiff train` and `graphdiff generate`."""
import argparse
import os
import sys

from ..cli import POSITIVE, add_backend_argument, add_tf32_argument, number as _number


def add_threads_argument(p):
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS threads and graphdiff's kernel threads (gd.set_threads) (default 1: the matrices "
                        "here are small, and busy-waiting BLAS threads run up to 10x slower when the cores are "
                        "shared; 0 keeps the library default)")


def set_threads(n):
    """n threads for graphdiff's NumPy kernels (gd.set_threads) and the BLAS thread pool (through
    threadpoolctl, when installed)."""
    if not n:
        return
    from ..threads import set_threads as kernel_threads
    kernel_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print(f"note: --threads {n} needs threadpoolctl (pip install threadpoolctl); using the BLAS default",
              file=sys.stderr)
        return
    threadpool_limits(n)


def _nonempty(text):
    if not text:
        raise argparse.ArgumentTypeError("must not be empty: give at least one character to continue")
    return text


COUNT = _number(int, 0, "a count (0 or more)")
NONNEG = _number(float, 0.0, "a finite number >= 0")
DROPOUT = _number(float, 0.0, "a dropout probability in [0, 0.99]", hi=0.99)    # what a checkpoint may hold

# the model and data settings; None on the command line means "not given": a fresh run uses these, a
# resumed run the checkpoint's (and giving a different value is an error: the model cannot change)
MODEL_DEFAULTS = dict(model="gpt", tokenizer="char", bpe_vocab=512, block_size=128, n_layer=4, n_head=4,
                      n_embd=128, n_hidden=256, dropout=0.0, norm="pre", pos="learned", dtype="float32")


def add_train_arguments(p):
    from .train import TRAIN_DEFAULTS
    D = dict(MODEL_DEFAULTS, **TRAIN_DEFAULTS)

    def arg(flag, default_key=None, **kw):
        key = default_key or flag[2:].replace("-", "_")
        help_ = kw.pop("help", "")
        p.add_argument(flag, default=None, help=f"{help_} (default {D[key]}; on --resume: the checkpoint's)".strip(),
                       **kw)
    arg("--model", choices=("gpt", "rnn"), help="model family")
    p.add_argument("--corpus", default=None,
                   help="UTF-8 text file (default: the Python standard library's own source, offline)")
    arg("--tokenizer", choices=("char", "bpe"))
    arg("--bpe-vocab", type=_number(int, 257, "at least 257 (256 bytes + <pad>)"),
        help="byte-level BPE vocabulary size")
    arg("--block-size", type=POSITIVE, help="context length T")
    arg("--batch-size", type=POSITIVE)
    arg("--n-layer", type=POSITIVE)
    arg("--n-head", type=POSITIVE)
    arg("--n-embd", type=POSITIVE, help="GPT width C / RNN embedding size")
    arg("--n-hidden", type=POSITIVE, help="RNN hidden size")
    arg("--dropout", type=DROPOUT)
    arg("--norm", choices=("pre", "post"), help="Pre-LN or Post-LN blocks")
    arg("--pos", choices=("learned", "sinusoidal"))
    arg("--dtype", choices=("float32", "float64"))
    arg("--steps", type=COUNT)
    p.add_argument("--time-limit", type=NONNEG, default=None, help="stop after this many seconds (default: none)")
    arg("--lr", type=NONNEG)
    arg("--min-lr", type=NONNEG)
    arg("--warmup", type=COUNT)
    arg("--weight-decay", type=NONNEG)
    arg("--grad-clip", type=NONNEG)
    arg("--eval-every", type=POSITIVE)
    arg("--eval-batches", type=POSITIVE)
    arg("--seed", type=COUNT)
    p.add_argument("--out", default="out/ckpt.npz", help="checkpoint path (.npz; a .json copy of the metadata "
                   "and <name>.tokenizer.json are written beside it, and <name>.lock while a run writes it; a "
                   "folder ending in / (DIR/, made if missing) means DIR/ckpt.npz; default out/ckpt.npz)")
    p.add_argument("--resume", action="store_true", help="continue from --out (default: off)")
    p.add_argument("--init", default=None, metavar="CKPT",
                   help="fine-tune: start from this checkpoint's weights and tokenizer on --corpus, with a new "
                        "optimizer state and this run's settings (step 0); writes --out (default: none)")
    p.add_argument("--log", default=None, help="append one JSON line per evaluation to this file (default: none)")
    p.add_argument("--sample-chars", type=COUNT, default=200,
                   help="print a sample of this length at the end (default 200)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: a bar on a terminal)")
    add_threads_argument(p)
    add_backend_argument(p)
    add_tf32_argument(p)
    p.add_argument("--cuda-graph", action="store_true",
                   help="record the training step once as a CUDA graph and replay it, one launch per step "
                        "(backend cupy, dropout 0; the same numbers as without; default: off)")
    p.add_argument("--comm", choices=("auto", "single", "mpi", "nccl"), default="auto",
                   help="data-parallel communicator: under mpiexec/srun (several ranks), auto is nccl for "
                        "--backend cupy and mpi otherwise; --batch-size is then the global batch, divided over "
                        "the ranks (default: auto)")


def run_train(args):
    """Train, on one process or (started by mpiexec / srun, or --comm given) data parallel on several: then a
    refusal the ranks decide together (they disagree, the batch does not divide) is one line from rank 0,
    and an error on one rank alone ends the whole job (MPI abort) instead of leaving the others waiting."""
    from ..distributed.comm import DistributedError, communicator, launched_size
    args.comm_ = None
    if args.comm != "auto" or launched_size() > 1:
        from ..backend import current_backend_name
        if args.comm == "nccl" and current_backend_name() != "cupy":
            print(f"graphdiff train: --comm nccl reduces GPU arrays; add --backend cupy, or use --comm mpi for "
                  f"the {current_backend_name()} backend", file=sys.stderr)
            return 2
        try:
            args.comm_ = communicator(args.comm, backend=current_backend_name())
        except DistributedError as e:
            print(f"graphdiff train: {e}", file=sys.stderr)
            return 2
    comm = args.comm_
    if comm is None:
        return _run_train(args)
    if comm.rank > 0:                             # rank 0 alone prints what the run does
        sys.stdout = open(os.devnull, "w")
        args.sample_chars = 0
    try:
        rc = _run_train(args)
    except DistributedError as e:
        if comm.rank == 0:
            print(f"graphdiff train: {e}", file=sys.stderr)
        return 2
    if rc and comm.size > 1:
        print(f"graphdiff train: rank {comm.rank} of {comm.size} stopped (exit code {rc}); ending the job",
              file=sys.stderr, flush=True)
        comm.abort(rc)
    return rc


def _run_train(args):
    """Check the outputs, take the checkpoint's lock (rank 0), then train (fresh or resumed) and save."""
    from ..nn.serialization import CheckpointError, OutputError, check_writable
    from .data import CorpusError
    from .tokenizers import TokenizerError
    from .checkpoint import checkpoint_lock
    set_threads(args.threads)
    if args.init and args.resume:
        print("graphdiff train: --init starts a new run from a checkpoint's weights and --resume continues "
              "one; give one of them", file=sys.stderr)
        return 2
    error = None if args.init or args.resume else check_model_flags(args.model or MODEL_DEFAULTS["model"], args)
    if error:                                     # (--init and --resume: checked once the checkpoint is read)
        print(f"graphdiff train: {error}", file=sys.stderr)
        return 2
    if args.out.endswith(("/", os.sep)):          # a folder, there or not yet
        args.out = os.path.join(args.out, "ckpt.npz")
    try:
        check_paths(args)
        check_writable(args.out, "checkpoint (--out)")
        if args.log:
            check_writable(args.log, "log (--log)")
        if args.comm_ is not None and args.comm_.rank > 0:
            return _train(args)                   # rank 0 holds the lock for the job
        with checkpoint_lock(args.out):
            return _train(args)
    except (CheckpointError, CorpusError, TokenizerError, OutputError) as e:
        print(f"graphdiff train: {e}", file=sys.stderr)
        return 2


def check_paths(args):
    """OutputError when a file this run writes is one it reads (the corpus, the --init checkpoint), or two
    of its outputs are one file: compared as resolved paths (symbolic links, `.`, `..` followed)."""
    from ..nn.serialization import OutputError
    from .checkpoint import lock_path, tokenizer_path
    base = args.out[:-4] if args.out.endswith(".npz") else args.out
    outputs = [("--out", args.out), (f"the metadata --out {args.out!r} writes beside it", base + ".json"),
               (f"the tokenizer file --out {args.out!r} writes beside it", tokenizer_path(args.out)),
               (f"the lock file --out {args.out!r} takes beside it", lock_path(args.out))]
    outputs += [("--log", args.log)] if args.log else []
    inputs = [(flag, path) for flag, path in (("--corpus", args.corpus), ("--init", args.init)) if path]

    def same(a, b):
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        try:
            return os.path.samefile(a, b)           # hard links
        except OSError:
            return False
    for i, (what, path) in enumerate(outputs):
        for flag, src in inputs:
            if same(path, src):
                name = f"{what} {path!r} is" if what in ("--out", "--log") else f"{what} ({path!r}) is"
                raise OutputError(f"{name} the {flag} file: the run would overwrite what it reads; choose "
                                  f"another {'--log' if what == '--log' else '--out'}")
        for other, path2 in outputs[:i]:
            if same(path, path2):
                raise OutputError(f"--log {path!r} is {other} ({path2!r}): the log would overwrite the "
                                  "checkpoint's files; choose another --log")


# the model settings that only one model family has: given for the other, they would be ignored
ONLY = {"gpt": ("n_layer", "n_head", "dropout", "norm", "pos"), "rnn": ("n_hidden",)}


def check_model_flags(kind, args):
    """An error line when a setting of the other model family is given (it would be ignored), else None."""
    for owner, keys in ONLY.items():
        given = [k for k in keys if getattr(args, k, None) is not None]
        if owner != kind and given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            article = "an" if kind == "rnn" else "a"
            return (f"{flags}: {'a GPT setting' if owner == 'gpt' else 'an RNN setting'}, which {article} {kind} model "
                    f"does not have; leave {'it' if len(given) == 1 else 'them'} out, or use --model {owner}")
    return None


def _train(args):
    from . import tokenizers
    from .data import load_corpus
    from .checkpoint import build_model, check_resume_settings, load_checkpoint, tokenizer_path
    from .train import TRAIN_DEFAULTS, Trainer, eval_line, init_trainer, prepare_data
    cls = Trainer
    if args.comm_ is not None:
        from ..distributed.train import DataParallelTrainer as cls
    docs, desc = load_corpus(args.corpus)
    print(f"corpus: {desc}")
    given = {k: getattr(args, k) for k in TRAIN_DEFAULTS if getattr(args, k) is not None}
    if args.resume:
        _, tok, meta, _ = load_checkpoint(args.out)
        check_resume_settings(meta, args.out, **{k: getattr(args, k) for k in MODEL_DEFAULTS},
                              batch_size=args.batch_size, seed=args.seed)
        error = check_model_flags(meta["model"]["kind"], args)
        if error:
            print(f"graphdiff train: {error}", file=sys.stderr)
            return 2
        train, val = prepare_data(docs, tok)
        trainer = cls.resume(args.out, train, val, **given)
        for k, (old, new) in trainer.changed.items():
            print(f"graphdiff train: warning: resuming with --{k.replace('_', '-')} {new} (the checkpoint "
                  f"used {old})", file=sys.stderr)
        print(f"resumed {args.out} at step {trainer.step}")
    elif args.init:
        trainer, meta = init_trainer(args.init, docs, settings={k: getattr(args, k) for k in MODEL_DEFAULTS},
                                     trainer_class=cls, **given)
        tok = trainer.tokenizer
        error = check_model_flags(trainer.model.kind, args)
        if error:
            print(f"graphdiff train: {error}", file=sys.stderr)
            return 2
        print(f"initialised from {args.init} (trained {meta.get('train', {}).get('step')} steps there): its "
              "weights and tokenizer; new optimizer state, step 0")
    else:
        a = argparse.Namespace(**{k: v if v is not None else MODEL_DEFAULTS.get(k) for k, v in vars(args).items()})
        if a.tokenizer == "char":
            tok = tokenizers.CharTokenizer.train("".join(docs))
        else:
            print(f"training a byte-level BPE tokenizer ({a.bpe_vocab} ids) on the corpus "
                  "(about 30 s for the default corpus)...", flush=True)
            tok = tokenizers.ByteBPETokenizer.train("".join(docs), vocab_size=a.bpe_vocab)
        seed = given.get("seed", TRAIN_DEFAULTS["seed"])
        if a.model == "gpt":
            cfg = dict(vocab_size=tok.vocab_size, block_size=a.block_size, n_layer=a.n_layer, n_head=a.n_head,
                       n_embd=a.n_embd, dropout=a.dropout, norm=a.norm, pos=a.pos, pad_id=tok.pad_id, seed=seed)
        else:
            cfg = dict(vocab_size=tok.vocab_size, block_size=a.block_size, n_embd=a.n_embd,
                       n_hidden=a.n_hidden, pad_id=tok.pad_id, seed=seed)
        try:
            model = build_model(a.model, cfg, dtype=a.dtype)
        except ValueError as e:                  # e.g. --n-head that does not divide --n-embd
            print(f"graphdiff train: {e}", file=sys.stderr)
            return 2
        train, val = prepare_data(docs, tok)
        trainer = cls(model, tok, train, val, **given)
    if args.comm_ is not None:
        trainer.comm = args.comm_
    if args.cuda_graph:
        from ..errors import GraphError
        try:
            trainer.use_cuda_graph()
        except (GraphError, ValueError) as e:
            print(f"graphdiff train: --cuda-graph: {e}", file=sys.stderr)
            return 2
    m = trainer.model
    print(f"model: {m.kind}, {m.num_parameters():,} parameters, vocab {tok.vocab_size}, "
          f"backend {m.backend.name}, {m.dtype}", flush=True)
    fit_schedule = args.time_limit is not None and args.steps is None and not args.resume
    bar = not args.no_progress and sys.stderr.isatty()        # no bar drawn into a log file or a pipe
    first = trainer.step
    trainer.fit(time_limit=args.time_limit, checkpoint=args.out, progress=bar, log=args.log,
                on_eval=None if bar else (lambda e: print(eval_line(e), flush=True)), fit_schedule=fit_schedule)
    if trainer.step == first:
        why = (f"--time-limit {args.time_limit:g} s ended before the first one" if first < trainer.hp["steps"]
               else f"--steps {trainer.hp['steps']}" + (f" and the checkpoint is at step {first}" if first else ""))
        print(f"no training step was run ({why}): nothing saved")
        return 0
    print(f"saved {args.out} at step {trainer.step} (and {os.path.basename(tokenizer_path(args.out))} beside it)")
    if args.sample_chars:
        from .generate import generate
        prompt = tok.encode("\n")
        ids = generate(m, prompt, args.sample_chars, temperature=0.8, top_k=None, seed=0)
        print("--- sample ---")
        print(tok.decode(prompt + ids))
    return 0


def add_generate_arguments(p):
    p.add_argument("--checkpoint", default="out/ckpt.npz", help="checkpoint to load (default out/ckpt.npz)")
    p.add_argument("--prompt", default="\n", type=_nonempty,
                   help='text to continue ("\\n" and "\\t" allowed; default a newline)')
    p.add_argument("--max-new-tokens", type=COUNT, default=300, help="tokens to generate (default 300)")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token (default: sample)")
    p.add_argument("--temperature", type=NONNEG, default=0.8, help="0 is greedy (default 0.8)")
    p.add_argument("--top-k", type=POSITIVE, default=None, help="sample among the k most likely tokens (default: all)")
    p.add_argument("--seed", type=COUNT, default=0, help="sampling seed (default 0)")
    p.add_argument("--no-kv-cache", action="store_true",
                   help="recompute the whole prefix at every step (default: KV cache)")
    add_threads_argument(p)
    add_backend_argument(p)
    add_tf32_argument(p)
    p.add_argument("--cuda-graph", action="store_true",
                   help="record a GPT's KV-cache step once as a CUDA graph and launch it per token (backend cupy; "
                        "default: off)")


def run_generate(args):
    from ..nn.serialization import CheckpointError
    from .generate import generate
    from .tokenizers import TokenizerError
    from .checkpoint import load_checkpoint
    set_threads(args.threads)
    try:
        model, tok, meta, _ = load_checkpoint(args.checkpoint)
        # "\n" and "\t" typed on a command line mean a newline and a tab
        prompt = tok.encode(args.prompt.replace("\\n", "\n").replace("\\t", "\t"))
    except (CheckpointError, TokenizerError) as e:
        print(f"graphdiff generate: {e}", file=sys.stderr)
        return 2
    from ..errors import GraphError
    try:
        ids = generate(model, prompt, args.max_new_tokens, greedy=args.greedy, temperature=args.temperature,
                       top_k=args.top_k, seed=args.seed, use_cache=not args.no_kv_cache, cuda_graph=args.cuda_graph)
    except (GraphError, ValueError) as e:
        if not args.cuda_graph:
            raise
        print(f"graphdiff generate: --cuda-graph: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(tok.decode(prompt + ids) + "\n")
    return 0
