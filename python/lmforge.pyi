"""lmforge from Python: tokenizers, data preparation, training and trained runs.

Every function calls the lmforge library (Rust); arrays are numpy arrays.

    import lmforge
    tok = lmforge.Tokenizer.gpt2()
    tok.encode("Hello world")               # array([15496, 995], dtype=uint32)
    training = lmforge.train(out="runs/demo", preset="char-cpu", max_iters=200)
    for record in training:                  # each metrics record as it is written
        print(record["step"], record.get("train_loss"))
    run = lmforge.Run("runs/demo")
    run.sample("ROMEO:", max_new_tokens=100)
    run.parameters()["transformer.wte.weight"].shape  # (vocab_size, n_embd)
"""

from os import PathLike
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

__version__: str

_Path = Union[str, PathLike]
_Ids = Union[Sequence[int], npt.NDArray[np.integer]]
_Batch = Union[Sequence[Sequence[int]], npt.NDArray[np.integer]]

class Error(Exception):
    """Any error lmforge reports; the message is the one `lmforge` (the command line) prints."""

class BadInputError(Error):
    """An option, file or data lmforge cannot use: a bad value, a malformed file, text outside the vocabulary."""

class RunExistsError(Error):
    """`train(out=...)` onto a directory that already holds a run (pass `overwrite=True`, or `resume=`),
    or an export onto existing files (pass `overwrite=True`)."""

class RunInUseError(Error):
    """A run directory another lmforge process is writing; wait until it ends."""

class OutOfMemoryError(Error):
    """A model or batch that needs more memory than the machine has."""

class NonFiniteError(Error):
    """A loss, gradient norm or logit that is NaN or infinite."""

class FileError(Error):
    """A file or folder that cannot be read or written (the path is in the message)."""

class DeviceError(Error):
    """The CUDA device could not start or run."""

class Tokenizer:
    """Text to token ids (numpy ``uint32``) and back."""

    @staticmethod
    def char(text: str) -> "Tokenizer":
        """A character-level tokenizer whose vocabulary is the distinct characters of ``text``, in order."""
    @staticmethod
    def gpt2() -> "Tokenizer":
        """GPT-2's byte-level BPE (50257 tokens); ids equal tiktoken's ``gpt2`` encoding."""
    @staticmethod
    def from_file(path: _Path) -> "Tokenizer":
        """A Hugging Face ``tokenizer.json`` (a run's, or any model's)."""
    @staticmethod
    def train(
        files: Sequence[_Path],
        vocab_size: int,
        special: Sequence[str] = ...,
        pattern: str = "gpt2",
        skip_invalid_utf8: bool = False,
    ) -> "Tokenizer":
        """Train a byte-level BPE of ``vocab_size`` tokens (256 bytes + merges + ``special``) on
        ``files`` (files, folders, glob patterns; text, compressed, JSON Lines, Parquet).
        ``pattern``: the pre-tokenization split, ``gpt2`` or ``gpt4``."""
    def encode(self, text: str) -> npt.NDArray[np.uint32]:
        """The token ids of ``text``; special tokens written in the text are special tokens."""
    def encode_batch(self, texts: Sequence[str]) -> List[npt.NDArray[np.uint32]]:
        """``encode`` of each text, computed in parallel."""
    def decode(self, ids: _Ids) -> str:
        """The text of ``ids`` (bytes that are not UTF-8 become U+FFFD)."""
    def save(self, path: _Path) -> None:
        """Write the tokenizer as a Hugging Face ``tokenizer.json``."""
    @property
    def vocab_size(self) -> int:
        """Number of token ids."""
    @property
    def kind(self) -> str:
        """``char``, ``gpt2``, ``bpe`` or ``hf``."""
    @property
    def eot_token(self) -> Optional[int]:
        """The id of ``<|endoftext|>``, if the vocabulary has it."""
    def __len__(self) -> int: ...

def prepare(
    inputs: Sequence[_Path],
    tokenizer: _Path,
    out: _Path,
    *,
    val_fraction: float = 0.1,
    seed: int = 1337,
    threads: Optional[int] = None,
    text_field: str = "text",
    on_bad_utf8: str = "error",
    on_bad_archive: str = "error",
    char_vocab_max: Optional[int] = None,
    shard_tokens: int = 100_000_000,
    progress: bool = True,
) -> Dict[str, Any]:
    """Tokenize ``inputs`` (files, folders, globs) into token shards in ``out``, as
    ``lmforge prepare``; ``tokenizer`` is ``"char"``, ``"gpt2"`` or a ``tokenizer.json``.
    Re-running resumes. ``progress`` draws a progress bar on the terminal (stderr).
    Returns the report: documents, train_tokens, val_tokens, vocab_size, bytes_read, seconds, ..."""

class Training:
    """A run being trained on lmforge's threads. Iterating it yields each metrics record
    (a dict: ``step``, ``train_loss``, ``lr``, ``tokens_per_sec``; evaluations have
    ``eval: True``, ``val_loss``) as soon as it is written, so a notebook cell can redraw a
    plot while the model trains. Interrupting (Ctrl-C, Jupyter's stop button) while
    iterating or waiting stops training at the end of its step with a checkpoint, then
    raises ``KeyboardInterrupt``; ``lmforge.train(resume=out)`` continues the run."""

    def __iter__(self) -> Iterator[Dict[str, Any]]: ...
    def __next__(self) -> Dict[str, Any]: ...
    def wait(self) -> Dict[str, Any]:
        """Wait for the end of training; returns the summary: ``step``, ``train_loss`` and
        ``val_loss`` (of the last evaluation, made at ``eval_step``), ``tokens_per_sec``,
        ``interrupted``, ``out``. Raises the run's error."""
    def stop(self) -> Dict[str, Any]:
        """Stop at the end of the current step (a checkpoint is saved); returns the summary."""
    @property
    def done(self) -> bool:
        """Whether training has ended."""
    @property
    def out(self) -> str:
        """The run directory."""

def train(
    out: Optional[_Path] = None,
    data: Optional[_Path] = None,
    preset: Optional[str] = None,
    *,
    resume: Optional[_Path] = None,
    config: Optional[_Path] = None,
    threads: Optional[int] = None,
    device: str = "cpu",
    quiet: bool = True,
    overwrite: bool = False,
    on_nan: str = "stop",
    ignore_memory_check: bool = False,
    init_from: Optional[_Path] = None,
    freeze_embeddings: bool = False,
    freeze_layers: int = 0,
    lora_rank: Optional[int] = None,
    lora_alpha: Optional[float] = None,
    lora_targets: Optional[Sequence[str]] = None,
    sft: Optional[_Path] = None,
    plot: str = "png",
    sample_every_eval: bool = False,
    allow_partial: bool = False,
    eval_choices: Optional[_Path] = None,
    **options: Union[int, float, str, bool],
) -> Training:
    """Start ``lmforge train`` with the same options (``--max-iters 100`` is
    ``max_iters=100``; ``block``/``block_size``, ``batch``/``batch_size``); an unknown
    option is refused by name (``BadInputError``). Returns at once with the ``Training``
    handle; training runs on lmforge's own threads without the GIL.

    - A new run: ``out``, ``data`` (a text file, folder or token shards; default the
      built-in Tiny Shakespeare), ``preset`` (``char-cpu``, ``gpt2-small``, ...).
    - A fine-tune: ``init_from`` a run or Hugging Face folder; ``lora_rank`` for LoRA;
      ``sft`` a JSON Lines file of conversations.
    - Continue a run: ``resume=out`` (training options such as ``max_iters`` may change).

    ``threads`` starts lmforge's thread pool on first use (later values are ignored
    in the same process). ``quiet=False`` prints progress to stderr."""

class Run:
    """A trained run directory (``lmforge train``, ``import-hf``), loaded once."""

    def __init__(self, path: _Path) -> None: ...
    @property
    def path(self) -> str: ...
    @property
    def tokenizer(self) -> Tokenizer:
        """The run's tokenizer."""
    @property
    def config(self) -> Dict[str, Any]:
        """The training configuration (``train_config.json``; a model's ``config`` for an imported one)."""
    @property
    def metrics(self) -> List[Dict[str, Any]]:
        """Every record of ``metrics.jsonl``, in order."""
    def metrics_frame(self) -> Any:
        """The metrics as a ``pandas.DataFrame`` (needs pandas)."""
    def sample(
        self,
        prompt: str = "\n",
        *,
        max_new_tokens: int = 200,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        min_p: Optional[float] = None,
        repetition_penalty: float = 1.0,
        stop: Sequence[str] = ...,
        seed: int = 1337,
    ) -> str:
        """The text after ``prompt`` (without it), as ``lmforge sample`` writes it;
        ``temperature=0`` picks the likeliest token each time."""
    def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        min_p: Optional[float] = None,
        repetition_penalty: float = 1.0,
        stop: Sequence[str] = ...,
        seed: int = 1337,
    ) -> str:
        """The assistant's reply to ``messages`` (``{"role": "system"|"user"|"assistant",
        "content": ...}``, the last the user's), through the run's chat template; a base
        model continues the transcript and its reply ends at a blank line."""
    def logits(self, ids: Union[_Ids, _Batch]) -> npt.NDArray[np.float32]:
        """Every position's logits: ``(T, V)`` for one sequence, ``(B, T, V)`` for a batch
        (a 2-D array or a list of equal-length lists). ``T`` is at most ``block_size``."""
    def loss(self, ids: Union[_Ids, _Batch]) -> float:
        """The mean cross-entropy of predicting ``ids[..., 1:]`` from ``ids[..., :-1]``."""
    def parameters(self) -> Dict[str, npt.NDArray[np.float32]]:
        """Every tensor by its Hugging Face name (``transformer.wte.weight``,
        ``transformer.h.0.attn.c_attn.weight``, ...; the bigram's ``token_embedding_table.weight``),
        as read-only numpy views of one copy of the weights."""
    def export_hf(self, out: _Path, *, overwrite: bool = False) -> str:
        """Write the run as a Hugging Face folder (LoRA adapters merged) that
        ``transformers.AutoModelForCausalLM.from_pretrained`` loads."""
