"""Masked modelling of text, for comparing with images (chapter 9): a small offline
corpus, a miniature character-level BERT, the bigram guess it must beat, and how both
are scored.

Conventions as for images: text: (N, T) character ids; mask: (N, T) bool, True = hidden
(masked), False = visible; a mask is made from noise (N, T) by `random_masking`, exactly
as for patches. runs/make_text.py trains the reference models (runs/text_mlm/); the
notebook and the tests load them.
"""

import hashlib
import importlib
import inspect
import re

import torch
import torch.nn.functional as F
from torch import nn

from mae_minimal.block import Block
from mae_minimal.checkpoint import read_checkpoint
from mae_minimal.masking import mask_from_noise
from mae_minimal.pos_embed import sincos_1d

# Standard-library modules whose docstrings make the corpus: English prose that ships
# with Python. (Not pdb: IPython replaces its classes with its own, so a notebook would
# see another text.)
MODULES = """abc argparse ast asyncio base64 bisect calendar cmd codecs collections
contextlib copy csv dataclasses datetime decimal difflib doctest email enum fileinput
fractions ftplib functools getopt gettext glob gzip hashlib heapq hmac html http.client
http.server imaplib inspect io ipaddress itertools json logging mailbox mimetypes
numbers operator optparse os pathlib pickle pkgutil platform poplib pprint queue random
re sched secrets selectors shelve shlex shutil signal smtplib socket socketserver
sqlite3 statistics string struct subprocess tarfile tempfile textwrap threading timeit
tokenize trace traceback types unittest urllib.parse urllib.request uuid warnings
weakref xml.dom.minidom zipfile zipimport""".split()
HELD_OUT_MODULES = MODULES[::5]  # every fifth module is held out
ALPHABET = " abcdefghijklmnopqrstuvwxyz"  # 27 symbols
VOCAB = len(ALPHABET)
MASK_ID = VOCAB  # the [MASK] token's id, one past the alphabet
# characters per sample: 64 tokens, as many as the patches of a 32 x 32 image in 4 x 4
TEXT_LENGTH = 64


def own_doc(obj):
    """An object's own docstring, dedented ('' when it has none; nothing inherited)."""
    return (
        inspect.cleandoc(obj.__doc__)
        if isinstance(getattr(obj, "__doc__", None), str)
        else ""
    )


def module_docstrings(name):
    """The docstrings of a module, of its public classes and functions, and of the
    classes' methods."""
    module = importlib.import_module(name)
    parts = [own_doc(module)]
    for key, obj in sorted(vars(module).items()):
        if key.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue  # private, or imported from elsewhere
        if inspect.isclass(obj) or inspect.isfunction(obj):
            parts.append(own_doc(obj))
        if inspect.isclass(obj):
            # its own public methods, not those other packages add to it
            # (transformers adds warning_once to logging.Logger)
            methods = sorted(vars(obj).items())
            parts += [own_doc(f) for k, f in methods
                      if not k.startswith("_") and inspect.isfunction(f)
                      and f.__module__ == module.__name__]  # fmt: skip
    return "\n".join(parts)


def clean(text):
    """Drop example-code lines (>>> and ...), lower-case, and make every other run of
    characters one space."""
    prose = "\n".join(
        line
        for line in text.splitlines()
        if not line.lstrip().startswith((">>>", "..."))
    )
    return re.sub(r"[^a-z]+", " ", prose.lower())


def encode(text):
    return torch.tensor([ALPHABET.index(ch) for ch in text])


def decode(ids):
    """ids: (T,) -> a string, '_' where the id is MASK_ID."""
    return "".join(ALPHABET[i] if i < MASK_ID else "_" for i in ids.tolist())


def build_corpus():
    """(train_ids, held_out_ids), (M,) ids each: the cleaned docstrings of the training
    and the held-out modules."""
    train = " ".join(
        clean(module_docstrings(m)) for m in MODULES if m not in HELD_OUT_MODULES
    )
    held_out = " ".join(clean(module_docstrings(m)) for m in HELD_OUT_MODULES)
    return encode(train), encode(held_out)


def corpus_digest(ids):
    """A short fingerprint of a corpus (docstrings change between Python versions)."""
    return hashlib.sha256(bytes(ids.to(torch.uint8).tolist())).hexdigest()[:16]


def held_out_windows(held_out_ids, length=TEXT_LENGTH):
    """All non-overlapping windows of `length` characters of the held-out text:
    (N, length)."""
    count = len(held_out_ids) // length
    return held_out_ids[: count * length].view(count, length)


def random_windows(ids, batch, length, generator):
    """`batch` windows of `length` characters starting at random places of ids:
    (batch, length)."""
    starts = torch.randint(0, len(ids) - length, (batch,), generator=generator)
    return ids[starts[:, None] + torch.arange(length)]


class MaskedCharModel(nn.Module):
    """A miniature character-level BERT. text: (N, T) ids, MASK_ID where hidden ->
    logits (N, T, V).

    Embeddings (hidden characters get the [MASK] embedding), a width-3 convolution so
    that each position starts out knowing its immediate neighbours, fixed 1-D
    sine-cosine positions, `depth` transformer blocks, and a linear head that predicts
    the character at every position.
    """

    def __init__(self, vocab=VOCAB, length=TEXT_LENGTH, dim=128, depth=4, num_heads=4):
        super().__init__()
        self.config = dict(
            vocab=vocab, length=length, dim=dim, depth=depth, num_heads=num_heads
        )
        self.embed = nn.Embedding(vocab + 1, dim)  # the last id is [MASK]
        # each position sees its neighbours
        self.local = nn.Conv1d(dim, dim, kernel_size=3, padding=1)
        self.register_buffer(  # (1, T, D)
            "pos_embed", sincos_1d(dim, torch.arange(length)).float()[None]
        )
        self.blocks = nn.ModuleList([Block(dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, text):
        x = self.embed(text)  # (N, T, D)
        x = x + self.local(x.transpose(1, 2)).transpose(1, 2) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))  # (N, T, V)


def masked_char_loss(model, batch):
    """The cross-entropy on the hidden characters only (as MAE's loss covers hidden
    patches only). batch: (text (N, T), mask (N, T) bool)."""
    text, mask = batch
    logits = model(torch.where(mask, MASK_ID, text))
    return F.cross_entropy(logits[mask], text[mask])


def load_text_model(path):
    """A MaskedCharModel from a weights.pth written by runs/make_text.py, in eval mode,
    fp32."""
    checkpoint = read_checkpoint(path)
    model = MaskedCharModel(**checkpoint["model_config"])
    model.load_state_dict({k: v.float() for k, v in checkpoint["model"].items()})
    return model.eval()


class BigramGuess:
    """The neighbours' guess: the best character c between a visible left neighbour l
    and a visible right neighbour r if the text were a first-order Markov chain,
    argmax_c P(c | l) P(r | c), with P(c) in place of P(c | l) when l is hidden, and no
    second factor when r is (add-one smoothing). With both neighbours hidden it is the
    context-free guess, the most frequent character."""

    def __init__(self, train_ids, vocab=VOCAB):
        counts = torch.zeros(vocab, vocab)
        counts.index_put_(
            (train_ids[:-1], train_ids[1:]),
            torch.ones(len(train_ids) - 1),
            accumulate=True,
        )
        # [a, b] = log P(b | a)
        self.log_next = torch.log((counts + 1) / (counts + 1).sum(dim=1, keepdim=True))
        unigram = torch.bincount(train_ids, minlength=vocab).float()
        self.log_unigram = torch.log(unigram / unigram.sum())  # (V,)
        self.most_frequent = int(unigram.argmax())

    def __call__(self, text, mask):
        """text: (N, T) ids, mask: (N, T) True = hidden -> (N, T) guessed ids at every
        position."""
        visible = ~mask
        # what is at i - 1
        left, left_visible = F.pad(text, (1, 0))[:, :-1], F.pad(visible, (1, 0))[:, :-1]
        # what is at i + 1
        right, right_visible = F.pad(text, (0, 1))[:, 1:], F.pad(visible, (0, 1))[:, 1:]
        score = torch.where(  # (N, T, V)
            left_visible[..., None], self.log_next[left], self.log_unigram
        )
        from_right = self.log_next[:, right].permute(1, 2, 0)  # (N, T, V): log P(r | c)
        return (
            score + torch.where(right_visible[..., None], from_right, torch.zeros(()))
        ).argmax(dim=-1)


@torch.no_grad()
def model_guess(model, text, mask, batch_size=512):
    """The model's most likely character at every position, given the visible ones:
    (N, T) ids."""
    hidden, device = torch.where(mask, MASK_ID, text), next(model.parameters()).device
    return torch.cat(
        [
            model(chunk.to(device)).argmax(dim=-1).cpu()
            for chunk in hidden.split(batch_size)
        ]
    )


def text_scores(model, bigram, texts, ratio, seed=0):
    """Accuracy on the hidden characters of `texts` (N, T) at `ratio`, masks drawn from
    `seed`, for the model (None: skip it), the bigram guess and the most frequent
    character; and the shares recovered, (a - a0) / (1 - a0) against the most frequent
    character and against the bigram guess.
    Returns a dict of floats (the model's entries only when a model is given)."""
    noise = torch.rand(texts.shape, generator=torch.Generator().manual_seed(seed))
    mask = mask_from_noise(noise, ratio).bool()
    hidden = texts[mask]
    scores = {
        "hidden_characters": int(mask.sum()),
        "most_frequent_accuracy": (
            (hidden == bigram.most_frequent).float().mean().item()
        ),
        "bigram_accuracy": (bigram(texts, mask)[mask] == hidden).float().mean().item(),
    }
    a0 = scores["most_frequent_accuracy"]
    scores["bigram_share"] = (scores["bigram_accuracy"] - a0) / (1 - a0)
    if model is not None:
        accuracy = (
            (model_guess(model, texts, mask)[mask] == hidden).float().mean().item()
        )
        scores["accuracy"] = accuracy
        scores["share"] = (accuracy - a0) / (1 - a0)
        bigram_accuracy = scores["bigram_accuracy"]
        scores["share_beyond_bigram"] = (accuracy - bigram_accuracy) / (
            1 - bigram_accuracy
        )
    return scores
