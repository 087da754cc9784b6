"""PyTorch reference models for lmforge.

Defines
  * ``GPT``       -- a nanoGPT-style model whose ``state_dict`` uses the Hugging Face
                     GPT-2 parameter names and layouts (Conv1D weights stored as
                     (in_features, out_features), out = x @ W + b).  Configurable: pre/post
                     LayerNorm, tanh-GELU/ReLU, tied/untied embeddings, optional biases.
  * ``CourseGPT`` -- the freeCodeCamp / Karpathy "GPT from scratch" notebook model
                     (``Head``, ``MultiHeadAttention``, ``FeedFoward``, ``Block``,
                     ``GPTLanguageModel``) written as in the course, plus
                     ``course_to_hf(state_dict)`` mapping its weights onto ``GPT``'s names.
  * ``BigramLanguageModel`` -- the course bigram model.

This module only defines models; it is imported by ``tools/make_fixtures.py``
(``python3 tools/make_fixtures.py`` writes tests/fixtures/*.safetensors) and by
``bench/torch_train.py``.  It does not depend on ``transformers``.
"""

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

DEFAULT_CONFIG = dict(
    vocab_size=65,
    block_size=64,
    n_layer=4,
    n_head=4,
    n_embd=128,
    dropout=0.0,
    norm="pre",  # "pre" | "post"
    activation="gelu",  # "gelu" (tanh approximation) | "relu"
    tie_embeddings=True,
    bias=True,  # biases in attn.c_proj, mlp.c_fc, mlp.c_proj and every LayerNorm
    qkv_bias=True,  # bias in attn.c_attn
    lm_head_bias=False,
)


def make_config(**kw):
    cfg = dict(DEFAULT_CONFIG)
    for k in kw:
        if k not in cfg:
            raise KeyError(f"unknown config key {k!r}")
    cfg.update(kw)
    return cfg


# --------------------------------------------------------------------------------------
# GPT with Hugging Face GPT-2 names / layouts
# --------------------------------------------------------------------------------------


class Conv1D(nn.Module):
    """HF GPT-2 Conv1D: weight is (in_features, out_features); out = x @ weight + bias."""

    def __init__(self, n_in, n_out, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        if bias:
            self.bias = nn.Parameter(torch.zeros(n_out))
        else:
            self.register_parameter("bias", None)
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x):
        out = x @ self.weight
        if self.bias is not None:
            out = out + self.bias
        return out


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg["n_embd"]
        assert C % cfg["n_head"] == 0
        self.n_head = cfg["n_head"]
        self.n_embd = C
        self.c_attn = Conv1D(C, 3 * C, bias=cfg["qkv_bias"])
        self.c_proj = Conv1D(C, C, bias=cfg["bias"])
        self.attn_dropout = nn.Dropout(cfg["dropout"])
        self.resid_dropout = nn.Dropout(cfg["dropout"])

    def forward(self, x):
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)
        v = v.view(B, T, nh, hs).transpose(1, 2)
        # nanoGPT's own path: PyTorch's fused attention kernel (flash or
        # memory-efficient where available), causal, scaled by 1/sqrt(hs).
        dropout = self.attn_dropout.p if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg["n_embd"]
        self.c_fc = Conv1D(C, 4 * C, bias=cfg["bias"])
        self.c_proj = Conv1D(4 * C, C, bias=cfg["bias"])
        self.activation = cfg["activation"]
        if self.activation not in ("gelu", "relu"):
            raise ValueError(f"activation must be gelu|relu, got {self.activation!r}")
        self.dropout = nn.Dropout(cfg["dropout"])

    def forward(self, x):
        h = self.c_fc(x)
        h = F.gelu(h, approximate="tanh") if self.activation == "gelu" else F.relu(h)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg["n_embd"]
        self.norm = cfg["norm"]
        if self.norm not in ("pre", "post"):
            raise ValueError(f"norm must be pre|post, got {self.norm!r}")
        self.ln_1 = nn.LayerNorm(C, eps=1e-5, bias=cfg["bias"])
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(C, eps=1e-5, bias=cfg["bias"])
        self.mlp = MLP(cfg)

    def forward(self, x):
        if self.norm == "pre":
            x = x + self.attn(self.ln_1(x))
            x = x + self.mlp(self.ln_2(x))
        else:
            x = self.ln_1(x + self.attn(x))
            x = self.ln_2(x + self.mlp(x))
        return x


class LMHead(nn.Module):
    """lm_head.weight (V, C) [nn.Linear layout] when untied; lm_head.bias (V) optional.
    When tied, the weight is transformer.wte.weight and is not a parameter here."""

    def __init__(self, cfg):
        super().__init__()
        V, C = cfg["vocab_size"], cfg["n_embd"]
        if cfg["tie_embeddings"]:
            self.register_parameter("weight", None)
        else:
            self.weight = nn.Parameter(torch.empty(V, C))
            nn.init.normal_(self.weight, std=0.02)
        if cfg["lm_head_bias"]:
            self.bias = nn.Parameter(torch.zeros(V))
        else:
            self.register_parameter("bias", None)

    def forward(self, x, wte_weight):
        w = wte_weight if self.weight is None else self.weight
        return F.linear(x, w, self.bias)


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        cfg = make_config(**cfg)
        self.config = cfg
        V, C = cfg["vocab_size"], cfg["n_embd"]
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(V, C),
                wpe=nn.Embedding(cfg["block_size"], C),
                drop=nn.Dropout(cfg["dropout"]),
                h=nn.ModuleList([Block(cfg) for _ in range(cfg["n_layer"])]),
                ln_f=nn.LayerNorm(C, eps=1e-5, bias=cfg["bias"]),
            )
        )
        self.lm_head = LMHead(cfg)
        self.init_nanogpt_()

    @torch.no_grad()
    def init_nanogpt_(self):
        """nanoGPT init: N(0, 0.02) weights/embeddings, zero biases, LayerNorm (1, 0),
        c_proj weights N(0, 0.02/sqrt(2*n_layer))."""
        std_proj = 0.02 / math.sqrt(2 * self.config["n_layer"])
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                p.zero_()
            elif ".ln_" in name:
                p.fill_(1.0)
            elif name.endswith("c_proj.weight"):
                p.normal_(0.0, std_proj)
            else:
                p.normal_(0.0, 0.02)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        assert T <= self.config["block_size"]
        idx = idx.long()
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x, self.transformer.wte.weight)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.long().view(-1))
        return logits, loss


# --------------------------------------------------------------------------------------
# Course model (freeCodeCamp / Karpathy "GPT from scratch"), written as in the notebook,
# with the notebook's globals turned into constructor arguments.
# --------------------------------------------------------------------------------------


class Head(nn.Module):
    """one head of self-attention"""

    def __init__(self, n_embd, head_size, block_size, dropout):
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.register_buffer("tril", torch.tril(torch.ones(block_size, block_size)))

        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        # input of size (batch, time-step, channels)
        # output of size (batch, time-step, head size)
        B, T, C = x.shape
        k = self.key(x)  # (B,T,hs)
        q = self.query(x)  # (B,T,hs)
        # compute attention scores ("affinities")
        wei = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5  # (B, T, hs) @ (B, hs, T) -> (B, T, T)
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float("-inf"))  # (B, T, T)
        wei = F.softmax(wei, dim=-1)  # (B, T, T)
        wei = self.dropout(wei)
        # perform the weighted aggregation of the values
        v = self.value(x)  # (B,T,hs)
        out = wei @ v  # (B, T, T) @ (B, T, hs) -> (B, T, hs)
        return out


class MultiHeadAttention(nn.Module):
    """multiple heads of self-attention in parallel"""

    def __init__(self, n_embd, num_heads, head_size, block_size, dropout):
        super().__init__()
        self.heads = nn.ModuleList(
            [Head(n_embd, head_size, block_size, dropout) for _ in range(num_heads)]
        )
        self.proj = nn.Linear(head_size * num_heads, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        out = torch.cat([h(x) for h in self.heads], dim=-1)
        out = self.dropout(self.proj(out))
        return out


class FeedFoward(nn.Module):
    """a simple linear layer followed by a non-linearity"""

    def __init__(self, n_embd, dropout):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd),
            nn.ReLU(),
            nn.Linear(4 * n_embd, n_embd),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        return self.net(x)


class CourseBlock(nn.Module):
    """Transformer block: communication followed by computation (post-norm, as in the course)"""

    def __init__(self, n_embd, n_head, block_size, dropout):
        # n_embd: embedding dimension, n_head: the number of heads we'd like
        super().__init__()
        head_size = n_embd // n_head
        self.sa = MultiHeadAttention(n_embd, n_head, head_size, block_size, dropout)
        self.ffwd = FeedFoward(n_embd, dropout)
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)

    def forward(self, x):
        y = self.sa(x)
        x = self.ln1(x + y)
        y = self.ffwd(x)
        x = self.ln2(x + y)
        return x


class GPTLanguageModel(nn.Module):
    def __init__(self, vocab_size, n_embd, n_head, n_layer, block_size, dropout=0.0):
        super().__init__()
        self.block_size = block_size
        # each token directly reads off the logits for the next token from a lookup table
        self.token_embedding_table = nn.Embedding(vocab_size, n_embd)
        self.position_embedding_table = nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(
            *[CourseBlock(n_embd, n_head=n_head, block_size=block_size, dropout=dropout) for _ in range(n_layer)]
        )
        self.ln_f = nn.LayerNorm(n_embd)  # final layer norm
        self.lm_head = nn.Linear(n_embd, vocab_size)

        self.apply(self._init_weights)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        idx = idx.long()

        # idx and targets are both (B,T) tensor of integers
        tok_emb = self.token_embedding_table(idx)  # (B,T,C)
        pos_emb = self.position_embedding_table(torch.arange(T, device=idx.device))  # (T,C)
        x = tok_emb + pos_emb  # (B,T,C)
        x = self.blocks(x)  # (B,T,C)
        x = self.ln_f(x)  # (B,T,C)
        logits = self.lm_head(x)  # (B,T,vocab_size)

        if targets is None:
            loss = None
        else:
            B, T, C = logits.shape
            logits = logits.view(B * T, C)
            targets = targets.long().view(B * T)
            loss = F.cross_entropy(logits, targets)

        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens):
        # idx is (B, T) array of indices in the current context
        for _ in range(max_new_tokens):
            # crop idx to the last block_size tokens
            idx_cond = idx[:, -self.block_size:]
            # get the predictions
            logits, loss = self(idx_cond)
            # focus only on the last time step
            logits = logits[:, -1, :]  # becomes (B, C)
            # apply softmax to get probabilities
            probs = F.softmax(logits, dim=-1)  # (B, C)
            # sample from the distribution
            idx_next = torch.multinomial(probs, num_samples=1)  # (B, 1)
            # append sampled index to the running sequence
            idx = torch.cat((idx, idx_next), dim=1)  # (B, T+1)
        return idx


# Name used in the brief / fixtures.
CourseGPT = GPTLanguageModel


def course_config(vocab_size, block_size, n_layer, n_head, n_embd, dropout=0.0):
    """The GPT config that computes the same function as the course model."""
    return make_config(
        vocab_size=vocab_size,
        block_size=block_size,
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        dropout=dropout,
        norm="post",
        activation="relu",
        tie_embeddings=False,
        bias=True,
        qkv_bias=False,
        lm_head_bias=True,
    )


def course_to_hf(sd):
    """Map a GPTLanguageModel state_dict (or a dict of same-named gradients) to HF GPT-2
    names/layouts.  `tril` buffers are dropped."""
    out = {}
    out["transformer.wte.weight"] = sd["token_embedding_table.weight"]
    out["transformer.wpe.weight"] = sd["position_embedding_table.weight"]
    layers = sorted({int(k.split(".")[1]) for k in sd if k.startswith("blocks.")})
    for l in layers:
        p = f"blocks.{l}."
        h = f"transformer.h.{l}."
        n_head = len({k.split(".")[4] for k in sd if k.startswith(p + "sa.heads.")})
        qkv = []
        for which in ("query", "key", "value"):
            qkv.append(torch.cat([sd[f"{p}sa.heads.{i}.{which}.weight"] for i in range(n_head)], dim=0))
        out[h + "ln_1.weight"] = sd[p + "ln1.weight"]
        out[h + "ln_1.bias"] = sd[p + "ln1.bias"]
        out[h + "attn.c_attn.weight"] = torch.cat(qkv, dim=0).t().contiguous()  # (C, 3C)
        out[h + "attn.c_proj.weight"] = sd[p + "sa.proj.weight"].t().contiguous()
        out[h + "attn.c_proj.bias"] = sd[p + "sa.proj.bias"]
        out[h + "ln_2.weight"] = sd[p + "ln2.weight"]
        out[h + "ln_2.bias"] = sd[p + "ln2.bias"]
        out[h + "mlp.c_fc.weight"] = sd[p + "ffwd.net.0.weight"].t().contiguous()  # (C, 4C)
        out[h + "mlp.c_fc.bias"] = sd[p + "ffwd.net.0.bias"]
        out[h + "mlp.c_proj.weight"] = sd[p + "ffwd.net.2.weight"].t().contiguous()  # (4C, C)
        out[h + "mlp.c_proj.bias"] = sd[p + "ffwd.net.2.bias"]
    out["transformer.ln_f.weight"] = sd["ln_f.weight"]
    out["transformer.ln_f.bias"] = sd["ln_f.bias"]
    out["lm_head.weight"] = sd["lm_head.weight"]  # (V, C), nn.Linear layout
    out["lm_head.bias"] = sd["lm_head.bias"]
    return out


class BigramLanguageModel(nn.Module):
    """The course bigram model: logits = token_embedding_table[idx]."""

    def __init__(self, vocab_size):
        super().__init__()
        self.token_embedding_table = nn.Embedding(vocab_size, vocab_size)

    def forward(self, idx, targets=None):
        logits = self.token_embedding_table(idx.long())  # (B,T,C)
        if targets is None:
            loss = None
        else:
            B, T, C = logits.shape
            loss = F.cross_entropy(logits.view(B * T, C), targets.long().view(B * T))
        return logits, loss
