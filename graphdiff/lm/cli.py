"""`graphdiff train` and `graphdiff generate`."""
import os
import sys

from ..cli import add_backend_argument


def add_threads_argument(p):
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS threads (default 1: the matrices here are small, and busy-waiting BLAS threads "
                        "run up to 10x slower when the cores are shared; 0 keeps the library default)")


def set_threads(n):
    """Limit the BLAS thread pool (through threadpoolctl, when installed)."""
    if not n:
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print(f"note: --threads {n} needs threadpoolctl (pip install threadpoolctl); using the BLAS default",
              file=sys.stderr)
        return
    threadpool_limits(n)


def add_train_arguments(p):
    from .train import TRAIN_DEFAULTS as D
    p.add_argument("--model", choices=("gpt", "rnn"), default="gpt", help="model family (default: gpt)")
    p.add_argument("--corpus", default=None,
                   help="UTF-8 text file (default: the Python standard library's own source, offline)")
    p.add_argument("--tokenizer", choices=("char", "bpe"), default="char")
    p.add_argument("--bpe-vocab", type=int, default=512, help="byte-level BPE vocabulary size")
    p.add_argument("--block-size", type=int, default=128, help="context length T")
    p.add_argument("--batch-size", type=int, default=D["batch_size"])
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128, help="GPT width C / RNN embedding size")
    p.add_argument("--n-hidden", type=int, default=256, help="RNN hidden size")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--norm", choices=("pre", "post"), default="pre", help="Pre-LN or Post-LN blocks")
    p.add_argument("--pos", choices=("learned", "sinusoidal"), default="learned")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--steps", type=int, default=D["steps"])
    p.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--lr", type=float, default=D["lr"])
    p.add_argument("--min-lr", type=float, default=D["min_lr"])
    p.add_argument("--warmup", type=int, default=D["warmup"])
    p.add_argument("--weight-decay", type=float, default=D["weight_decay"])
    p.add_argument("--grad-clip", type=float, default=D["grad_clip"])
    p.add_argument("--eval-every", type=int, default=D["eval_every"])
    p.add_argument("--eval-batches", type=int, default=D["eval_batches"])
    p.add_argument("--seed", type=int, default=D["seed"])
    p.add_argument("--out", default="out/ckpt.npz", help="checkpoint path (.npz; a .json copy of the "
                   "metadata is written beside it)")
    p.add_argument("--resume", action="store_true", help="continue from --out")
    p.add_argument("--log", default=None, help="append one JSON line per evaluation to this file")
    p.add_argument("--sample-chars", type=int, default=200, help="print a sample of this length at the end")
    p.add_argument("--no-progress", action="store_true")
    add_threads_argument(p)
    add_backend_argument(p)


def run_train(args):
    from ..nn.serialization import CheckpointError
    from . import tokenizers
    from .data import CorpusError, load_corpus
    from .train import Trainer, build_model, check_resume_compatible, load_checkpoint, prepare_data
    set_threads(args.threads)
    try:
        docs, desc = load_corpus(args.corpus)
    except CorpusError as e:
        print(f"graphdiff train: {e}", file=sys.stderr)
        return 2
    print(f"corpus: {desc}")
    hp = dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr, min_lr=args.min_lr, warmup=args.warmup,
              weight_decay=args.weight_decay, grad_clip=args.grad_clip, eval_every=args.eval_every,
              eval_batches=args.eval_batches, seed=args.seed)
    try:
        if args.resume:
            _, tok, meta, _ = load_checkpoint(args.out)
            check_resume_compatible(meta, args.model, args.out)
            train, val = prepare_data(docs, tok)
            trainer = Trainer.resume(args.out, train, val, steps=args.steps)
            print(f"resumed {args.out} at step {trainer.step}")
        else:
            if args.tokenizer == "char":
                tok = tokenizers.CharTokenizer.train("".join(docs))
            else:
                print(f"training a byte-level BPE tokenizer ({args.bpe_vocab} ids) on the corpus "
                      "(about 30 s for the default corpus)...", flush=True)
                tok = tokenizers.ByteBPETokenizer.train("".join(docs), vocab_size=args.bpe_vocab)
            if args.model == "gpt":
                cfg = dict(vocab_size=tok.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                           n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout, norm=args.norm,
                           pos=args.pos, pad_id=tok.pad_id, seed=args.seed)
            else:
                cfg = dict(vocab_size=tok.vocab_size, block_size=args.block_size, n_embd=args.n_embd,
                           n_hidden=args.n_hidden, pad_id=tok.pad_id, seed=args.seed)
            model = build_model(args.model, cfg, dtype=args.dtype)
            train, val = prepare_data(docs, tok)
            trainer = Trainer(model, tok, train, val, **hp)
    except (CheckpointError, CorpusError, ValueError) as e:
        print(f"graphdiff train: {e}", file=sys.stderr)
        return 2
    m = trainer.model
    print(f"model: {m.kind}, {m.num_parameters():,} parameters, vocab {tok.vocab_size}, "
          f"backend {m.backend.name}, {m.dtype}")
    trainer.fit(time_limit=args.time_limit, checkpoint=args.out, progress=not args.no_progress, log=args.log)
    tokenizers.save(tok, os.path.join(os.path.dirname(os.path.abspath(args.out)), "tokenizer.json"))
    print(f"saved {args.out} at step {trainer.step} (and tokenizer.json beside it)")
    if args.sample_chars:
        from .generate import generate
        prompt = tok.encode("\n")
        ids = generate(m, prompt, args.sample_chars, temperature=0.8, top_k=None, seed=0)
        print("--- sample ---")
        print(tok.decode(prompt + ids))
    return 0


def add_generate_arguments(p):
    p.add_argument("--checkpoint", default="out/ckpt.npz")
    p.add_argument("--prompt", default="\n", help='text to continue ("\\n" and "\\t" allowed)')
    p.add_argument("--max-new-tokens", type=int, default=300)
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-kv-cache", action="store_true", help="recompute the whole prefix at every step")
    add_threads_argument(p)
    add_backend_argument(p)


def run_generate(args):
    from ..nn.serialization import CheckpointError
    from .generate import generate
    from .tokenizers import TokenizerError
    from .train import load_checkpoint
    set_threads(args.threads)
    try:
        model, tok, meta, _ = load_checkpoint(args.checkpoint)
        # "\n" and "\t" typed on a command line mean a newline and a tab
        prompt = tok.encode(args.prompt.replace("\\n", "\n").replace("\\t", "\t"))
    except (CheckpointError, TokenizerError) as e:
        print(f"graphdiff generate: {e}", file=sys.stderr)
        return 2
    ids = generate(model, prompt, args.max_new_tokens, greedy=args.greedy, temperature=args.temperature,
                   top_k=args.top_k, seed=args.seed, use_cache=not args.no_kv_cache)
    sys.stdout.write(tok.decode(prompt + ids) + "\n")
    return 0
