"""graphdiff.lm: tokenizers, batching, GPT and RNN language models, training, generation, unrolled graphs."""
from ..nn.serialization import CheckpointError  # noqa: F401
from .tokenizers import ByteBPETokenizer, CharTokenizer, TokenizerError  # noqa: F401
from .data import CorpusError, batch_texts, load_corpus, make_batch  # noqa: F401
from .gpt import GPT  # noqa: F401
from .rnn import RNNLM  # noqa: F401
from .checkpoint import build_model, load_checkpoint  # noqa: F401
from .train import Trainer  # noqa: F401
from .generate import Decoder, generate  # noqa: F401
from .unrolled import Unrolled, graph_stats, unroll  # noqa: F401
