//! The model's shape and layout options, as a plain struct of named numbers
//! (nanoGPT's names), and the checks that reject impossible combinations.

pub use crate::backend::Activation;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Which network: the course's bigram table or a GPT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// A `(V, V)` table: row `i` holds the next-token logits after token `i`.
    Bigram,
    /// Token + position embeddings, transformer blocks, final norm, LM head.
    Gpt,
    /// A Llama-family decoder (Llama, Qwen2, Mistral, SmolLM, TinyLlama):
    /// token embeddings only, RMS norms, rotary positions, grouped-query
    /// attention and a SwiGLU feed-forward (the shape in [`LlamaConfig`]).
    Llama,
}

/// How the rotary frequencies are stretched for long contexts
/// (Hugging Face's `rope_scaling`; math in [`super::rope`]).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// `inv_freq[i] = theta^(-2i / hs)`.
    #[default]
    None,
    /// Every frequency divided by `factor` (positions interpolated).
    Linear { factor: f32 },
    /// Llama 3.1's: low frequencies divided by `factor`, high ones kept, a
    /// smooth blend between.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: usize,
    },
}

/// The shape options a Llama-family model adds (Hugging Face's names in comments).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Key/value heads (`num_key_value_heads`); `n_head` must be a multiple.
    pub n_kv_head: usize,
    /// The feed-forward's hidden width (`intermediate_size`).
    pub intermediate_size: usize,
    /// The rotary base (`rope_theta`).
    pub rope_theta: f32,
    #[serde(default)]
    pub rope_scaling: RopeScaling,
    /// Added to the mean square in every RMS norm (`rms_norm_eps`).
    pub rms_norm_eps: f32,
}

/// Where layer norm sits in a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// GPT-2: `x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))`.
    Pre,
    /// The course notebook (and the original Transformer): `x = ln_1(x + attn(x)); x = ln_2(x + mlp(x))`.
    Post,
}

/// Everything that decides the parameter shapes and the forward computation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    /// Token ids `0..vocab_size` (missing in `train_config.json` files of
    /// earlier versions, where the tokenizer gave it).
    #[serde(default)]
    pub vocab_size: usize,
    /// Longest context the model sees (number of learned positions).
    pub block_size: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    /// Dropout probability on embeddings, attention weights and both residual branches.
    pub dropout: f32,
    pub norm: Norm,
    pub activation: Activation,
    /// The LM head reuses the token embedding matrix (GPT-2).
    pub tie_embeddings: bool,
    /// Biases in the attention output projection, the feed-forward layers and layer norms.
    pub bias: bool,
    /// Bias in the query/key/value projection.
    pub qkv_bias: bool,
    /// Bias in the LM head.
    pub lm_head_bias: bool,
    /// The Llama-family shape (exactly when `arch` is `llama`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llama: Option<LlamaConfig>,
    /// Low-rank adapters on the block's linear layers (see [`super::lora`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
}

/// A block linear layer LoRA can adapt, by its Hugging Face name (as PEFT's
/// `target_modules`). GPT-2's: `c_attn`, `c_proj` (both attention's and the
/// MLP's output projection), `c_fc`. A Llama's: `q_proj`, `k_proj`, `v_proj`,
/// `o_proj`, `gate_proj`, `up_proj`, `down_proj`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum LoraTarget {
    CAttn,
    CProj,
    CFc,
    QProj,
    KProj,
    VProj,
    OProj,
    GateProj,
    UpProj,
    DownProj,
}

impl LoraTarget {
    /// Whether the target names a layer of `arch`'s blocks.
    pub fn belongs_to(self, arch: Arch) -> bool {
        use LoraTarget::*;
        match self {
            CAttn | CProj | CFc => arch == Arch::Gpt,
            QProj | KProj | VProj | OProj | GateProj | UpProj | DownProj => arch == Arch::Llama,
        }
    }

    /// The Hugging Face (and PEFT) name: `q_proj`.
    pub fn name(self) -> &'static str {
        use LoraTarget::*;
        match self {
            CAttn => "c_attn",
            CProj => "c_proj",
            CFc => "c_fc",
            QProj => "q_proj",
            KProj => "k_proj",
            VProj => "v_proj",
            OProj => "o_proj",
            GateProj => "gate_proj",
            UpProj => "up_proj",
            DownProj => "down_proj",
        }
    }

    /// The targets when none are given: every GPT-2 block linear, and for a
    /// Llama PEFT's own default (`q_proj`, `v_proj`).
    pub fn defaults(arch: Arch) -> Vec<LoraTarget> {
        match arch {
            Arch::Llama => vec![LoraTarget::QProj, LoraTarget::VProj],
            _ => vec![LoraTarget::CAttn, LoraTarget::CProj, LoraTarget::CFc],
        }
    }
}

/// Rank `r` adapters on the `targets`, `W + (alpha / r) · ΔW` (see [`super::lora`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f32,
    pub targets: Vec<LoraTarget>,
}

impl LoraConfig {
    /// The factor on the low-rank product: `alpha / rank`.
    pub fn scale(&self) -> f32 {
        self.alpha / self.rank as f32
    }
}

impl LlamaConfig {
    /// A Llama of this width with nothing shared: every query head its own
    /// key/value head, a SwiGLU hidden width of about `8C/3` (rounded up to a
    /// multiple of 32: three matrices of `C x I` hold as many weights as the GPT's
    /// two of `C x 4C`), rope_theta 10000, eps 1e-5 (Llama 2's).
    pub fn for_shape(n_embd: usize, n_head: usize) -> Self {
        LlamaConfig {
            n_kv_head: n_head,
            intermediate_size: (8 * n_embd / 3).div_ceil(32) * 32,
            rope_theta: 10_000.0,
            rope_scaling: RopeScaling::None,
            rms_norm_eps: 1e-5,
        }
    }
}

/// Added to the variance in every layer norm of a GPT (GPT-2's
/// `layer_norm_epsilon`, [`super::family::gpt2::LAYER_NORM_EPS`]); a Llama's
/// RMS norms use [`LlamaConfig::rms_norm_eps`].
pub const GPT_LAYER_NORM_EPS: f32 = super::family::gpt2::LAYER_NORM_EPS;

impl ModelConfig {
    /// The epsilon of every norm of this model (see [`GPT_LAYER_NORM_EPS`]):
    /// what the norm layers pass to the kernels, and what `config.json` and
    /// GGUF files record.
    pub fn norm_eps(&self) -> f32 {
        self.llama
            .as_ref()
            .map_or(GPT_LAYER_NORM_EPS, |l| l.rms_norm_eps)
    }

    /// After `arch` was set (`--arch`): add or drop the Llama options to
    /// match, and with `default_activation` the arch's own (SiLU for Llama,
    /// GELU for GPT). A Llama has no biases outside q/k/v and is pre-norm.
    pub fn match_arch(&mut self, default_activation: bool) {
        match (self.arch, self.llama.is_some()) {
            (Arch::Llama, false) => {
                self.llama = Some(LlamaConfig::for_shape(self.n_embd, self.n_head));
                (self.norm, self.bias, self.lm_head_bias) = (Norm::Pre, false, false);
                if default_activation {
                    self.activation = Activation::Silu;
                }
            }
            (Arch::Gpt | Arch::Bigram, true) => {
                self.llama = None;
                if default_activation {
                    self.activation = Activation::Gelu;
                }
            }
            _ => {}
        }
    }

    /// Size of one attention head.
    pub fn head_size(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Key/value heads: `n_head` unless grouped-query attention shares them.
    pub fn n_kv_head(&self) -> usize {
        self.llama.as_ref().map_or(self.n_head, |l| l.n_kv_head)
    }

    /// Width of the `qkv` projection: `C` of queries, then keys and values
    /// of `n_kv_head` heads each.
    pub fn qkv_width(&self) -> usize {
        self.n_embd + 2 * self.n_kv_head() * self.head_size()
    }

    /// The feed-forward's hidden width: `4C` (GPT) or `intermediate_size`.
    pub fn ffn_width(&self) -> usize {
        self.llama
            .as_ref()
            .map_or(4 * self.n_embd, |l| l.intermediate_size)
    }

    /// Width of the feed-forward's first projection: the hidden width, twice
    /// for SwiGLU's gate and up projections side by side.
    pub fn fc_width(&self) -> usize {
        match self.family().recipe.map(|r| r.mlp) {
            Some(super::family::Mlp::SwiGlu) => 2 * self.ffn_width(),
            _ => self.ffn_width(),
        }
    }

    /// Reject configurations that cannot be built, saying which field is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.vocab_size == 0 {
            return bad("vocab_size must be at least 1".into());
        }
        if self.block_size == 0 {
            return bad("block_size must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if self.arch == Arch::Bigram {
            return match self.lora {
                Some(_) => {
                    bad("LoRA adapts a GPT's linear layers; the bigram model has none".into())
                }
                None => Ok(()),
            };
        }
        if let Some(lora) = &self.lora
            && (lora.rank == 0
                || lora.targets.is_empty()
                || !lora.alpha.is_finite()
                || lora.alpha <= 0.0)
        {
            return bad(format!(
                "--lora-rank must be at least 1, --lora-alpha a positive number and --lora-targets not empty (got rank {}, alpha {}, {} targets)",
                lora.rank,
                lora.alpha,
                lora.targets.len()
            ));
        }
        if let Some(wrong) = self
            .lora
            .iter()
            .flat_map(|l| &l.targets)
            .find(|t| !t.belongs_to(self.arch))
        {
            let own: Vec<&str> = <LoraTarget as clap::ValueEnum>::value_variants()
                .iter()
                .filter(|t| t.belongs_to(self.arch))
                .map(|t| t.name())
                .collect();
            let family = match self.arch {
                Arch::Llama => "Llama-family",
                _ => "GPT-2",
            };
            return bad(format!(
                "--lora-targets {} is not a layer of this {family} model; its layers are {}",
                wrong.name(),
                own.join(", ")
            ));
        }
        if let Some(lora) = &self.lora
            && let Some((_, twice)) = lora
                .targets
                .iter()
                .enumerate()
                .find(|(i, t)| lora.targets[..*i].contains(t))
        {
            return bad(format!("--lora-targets names {} twice", twice.name()));
        }
        if self.n_layer == 0 || self.n_head == 0 || self.n_embd == 0 {
            return bad(format!(
                "n_layer, n_head and n_embd must be positive (got {}, {}, {})",
                self.n_layer, self.n_head, self.n_embd
            ));
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!(
                "n_embd ({}) must be divisible by n_head ({}): each head gets n_embd / n_head channels",
                self.n_embd, self.n_head
            ));
        }
        self.validate_llama()
    }

    /// The Llama-family options: present exactly for `arch = llama`, heads
    /// that group evenly, even head sizes (rotary pairs), positive numbers.
    fn validate_llama(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        let l = match (&self.llama, self.arch) {
            (None, Arch::Llama) => {
                return bad("arch llama needs its shape (n_kv_head, intermediate_size, rope_theta, rms_norm_eps)".into());
            }
            (Some(_), Arch::Llama) => self.llama.as_ref().expect("matched"),
            (Some(_), _) => {
                return bad("--n-kv-head, --intermediate-size and --rope-theta (and the other rope and RMS-norm options) belong to --arch llama".into());
            }
            (None, _) => return Ok(()),
        };
        if l.n_kv_head == 0 || !self.n_head.is_multiple_of(l.n_kv_head) {
            return bad(format!(
                "n_head ({}) must be a multiple of n_kv_head ({}): query heads share key/value heads in equal groups",
                self.n_head, l.n_kv_head
            ));
        }
        if !self.head_size().is_multiple_of(2) {
            return bad(format!(
                "rotary embeddings turn pairs of channels: the head size n_embd / n_head ({}) must be even",
                self.head_size()
            ));
        }
        if l.intermediate_size == 0 {
            return bad("intermediate_size must be at least 1".into());
        }
        let positive = |x: f32| x.is_finite() && x > 0.0;
        if !positive(l.rope_theta) || !positive(l.rms_norm_eps) {
            return bad(format!(
                "rope_theta and rms_norm_eps must be positive numbers (got {}, {})",
                l.rope_theta, l.rms_norm_eps
            ));
        }
        if self.activation != Activation::Silu
            || self.norm != Norm::Pre
            || self.bias
            || self.lm_head_bias
        {
            return bad("a Llama-family model is pre-norm with a SiLU-gated feed-forward and no biases outside q/k/v (activation silu, norm pre, bias and lm_head_bias false)".into());
        }
        let scaling_ok = match l.rope_scaling {
            RopeScaling::None => true,
            RopeScaling::Linear { factor } => positive(factor),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                positive(factor)
                    && positive(low_freq_factor)
                    && high_freq_factor > low_freq_factor
                    && high_freq_factor.is_finite()
                    && original_max_position_embeddings > 0
            }
        };
        if !scaling_ok {
            return bad(format!(
                "rope_scaling {:?} is not usable: factors must be positive (llama3: high_freq_factor above low_freq_factor)",
                l.rope_scaling
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tiny() -> ModelConfig {
        ModelConfig {
            arch: Arch::Gpt,
            vocab_size: 11,
            block_size: 8,
            n_layer: 2,
            n_head: 3,
            n_embd: 12,
            dropout: 0.0,
            norm: Norm::Pre,
            activation: Activation::Gelu,
            tie_embeddings: true,
            bias: true,
            qkv_bias: true,
            lm_head_bias: false,
            llama: None,
            lora: None,
        }
    }

    #[test]
    fn heads_must_divide_embedding() {
        let mut c = tiny();
        assert!(c.validate().is_ok());
        c.n_head = 5;
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("n_embd (12) must be divisible by n_head (5)"),
            "{err}"
        );
    }

    /// A target's name is the one `--lora-targets` and `adapter_config.json` spell.
    #[test]
    fn lora_target_names_are_their_serialised_names() {
        for t in <LoraTarget as clap::ValueEnum>::value_variants() {
            assert_eq!(serde_json::json!(t), t.name());
        }
    }

    #[test]
    fn lora_targets_must_be_the_archs_and_distinct() {
        let mut c = tiny();
        let lora = |targets: Vec<LoraTarget>| {
            Some(LoraConfig {
                rank: 2,
                alpha: 4.0,
                targets,
            })
        };
        c.lora = lora(vec![LoraTarget::CAttn, LoraTarget::QProj]);
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains(
                "q_proj is not a layer of this GPT-2 model; its layers are c_attn, c_proj, c_fc"
            ),
            "{err}"
        );
        c.lora = lora(vec![LoraTarget::CFc, LoraTarget::CFc]);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("names c_fc twice"), "{err}");
        c.lora = lora(LoraTarget::defaults(Arch::Gpt));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn dropout_must_be_a_probability() {
        let mut c = tiny();
        c.dropout = 1.0;
        assert!(c.validate().is_err());
    }
}
