//! Memory: estimated from the configuration before anything is allocated,
//! and compared with what the machine has, so that a configuration too big
//! for it is an error that says so, not an abort (`memory allocation of N
//! bytes failed`), a panic (`capacity overflow`) or an hour of swapping
//! ending in the OOM killer.
//!
//! Every count is taken in `u128` and checked: a configuration whose size
//! does not fit in 64 bits is reported as such. The activations come from the
//! model's one size table ([`crate::model::activations::sizes`]); the
//! parameter count from the layout ([`crate::model::ParamLayout`]).

use crate::backend::WeightType;
use crate::backend::cpu::Dtype;
use crate::error::{Error, Result};
use crate::model::activations::{Purpose, Shape, sizes};
use crate::model::{Arch, ModelConfig, ParamLayout};
use std::path::Path;

const F32: u128 = 4;

/// An estimate: named parts, in bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub parts: Vec<(&'static str, u128)>,
}

impl Estimate {
    pub fn total(&self) -> u128 {
        self.parts.iter().map(|(_, bytes)| bytes).sum()
    }

    fn describe(&self) -> String {
        let parts: Vec<String> = self
            .parts
            .iter()
            .filter(|(_, bytes)| *bytes > 0)
            .map(|(name, bytes)| format!("{name} {}", format_bytes(*bytes)))
            .collect();
        parts.join(", ")
    }
}

/// `bytes` for people: `26.1 GB`, `63.2 kB` (powers of 1000).
pub fn format_bytes(bytes: u128) -> String {
    let units = [("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)];
    let b = bytes as f64;
    match units.iter().find(|(_, size)| b >= *size) {
        Some((unit, size)) => format!("{:.1} {unit}", b / size),
        None => format!("{bytes} B"),
    }
}

fn overflow(cfg: &ModelConfig) -> Error {
    Error::Memory(format!(
        "the model's size overflows a 64-bit count (n_layer {}, n_embd {}, block {}): no \
         machine can hold it; use smaller --n-layer, --n-embd or --block",
        cfg.n_layer, cfg.n_embd, cfg.block_size
    ))
}

/// The number of parameters, or an error if the model is too large to count
/// in a `usize` (with room for its gradients and moments). Taken from the
/// layout ([`ParamLayout`]) of the model with no block and with one, as
/// every block is laid out alike: laying out a hostile config (a billion
/// layers) whole would itself exhaust memory, and [`ParamLayout::count`]
/// adds up in `u128`.
pub fn param_count(cfg: &ModelConfig) -> Result<usize> {
    // No tensor dimension beyond 2^40: then every width the layout derives
    // (`4 * C`, ...) fits a `usize`, and only the products could overflow.
    let dims = [
        cfg.vocab_size,
        cfg.block_size,
        cfg.n_embd,
        cfg.llama.as_ref().map_or(0, |l| l.intermediate_size),
        cfg.lora.as_ref().map_or(0, |l| l.rank),
    ];
    if dims.iter().any(|&d| d > 1 << 40) {
        return Err(overflow(cfg));
    }
    let with_blocks = |n_layer| {
        ParamLayout::new(&ModelConfig {
            n_layer,
            ..cfg.clone()
        })
        .count()
    };
    let (outside, one) = (with_blocks(0), with_blocks(1));
    let count = outside + cfg.n_layer as u128 * (one - outside);
    // 16 bytes a parameter (weights, gradients, two moments) must be addressable.
    if count * 4 * F32 > isize::MAX as u128 {
        return Err(overflow(cfg));
    }
    Ok(count as usize)
}

/// Floats of every activation in the size table for `rows` positions.
fn activation_floats(cfg: &ModelConfig, rows: usize, purpose: Purpose) -> u128 {
    let mut total = 0u128;
    let mut add = |s: Shape| {
        total += s.layers as u128 * s.rows as u128 * s.width as u128;
        Ok(())
    };
    let (tensors, scratch) = sizes(cfg, rows, purpose);
    // `add` cannot fail; the maps only walk the table.
    let _ = tensors.try_map(&mut add);
    let _ = scratch.try_map(&mut add);
    total
}

/// The CPU attention kernel's scratch for `b` sequences of `t` positions:
/// `3 * b * t * t` floats (the probabilities, their gradient, a dropped-out
/// copy; `backend::cpu::attention::scratch_len`).
fn attention_scratch_floats(cfg: &ModelConfig, b: usize, t: usize) -> u128 {
    if cfg.arch == Arch::Bigram {
        return 0;
    }
    3 * b as u128 * t as u128 * t as u128
}

/// The bf16 operands of the CPU's products (`backend::cpu::bf16::Bf16Scratch`)
/// when training on `rows` positions: a bound, in bytes. Every product of a
/// linear layer `(IN, OUT)` multiplies matrices whose three dimensions are
/// `IN`, `OUT` and the row count (or a LoRA rank), in some order; the scratch
/// holds the largest left operand (`m * ceil(k/2)` pairs) and the largest
/// right one (`16 ceil(n/16) * ceil(k/2)` pairs) met, each at most the
/// largest over all those orders.
fn bf16_scratch_bytes(cfg: &ModelConfig, rows: usize) -> u128 {
    if cfg.arch == Arch::Bigram {
        return 0;
    }
    let inner = [
        Some(rows as u128),
        cfg.lora.as_ref().map(|l| l.rank as u128),
    ];
    let (mut lhs, mut rhs) = (0u128, 0u128);
    for (fan_in, fan_out) in linear_shapes(cfg) {
        for x in inner.into_iter().flatten() {
            let dims = [x, fan_in, fan_out];
            for (m, k, n) in [
                (0, 1, 2),
                (0, 2, 1),
                (1, 0, 2),
                (1, 2, 0),
                (2, 0, 1),
                (2, 1, 0),
            ] {
                let (m, k, n) = (dims[m], dims[k], dims[n]);
                lhs = lhs.max(m * k.div_ceil(2));
                rhs = rhs.max(16 * n.div_ceil(16) * k.div_ceil(2));
            }
        }
    }
    4 * (lhs + rhs)
}

/// `(IN, OUT)` of a block's linear layers and of the LM head.
fn linear_shapes(cfg: &ModelConfig) -> [(u128, u128); 5] {
    let c = cfg.n_embd as u128;
    [
        (c, cfg.qkv_width() as u128),
        (c, c),
        (c, cfg.fc_width() as u128),
        (cfg.ffn_width() as u128, c),
        (c, cfg.vocab_size as u128),
    ]
}

/// Training's bf16 copy of the matrices the forward products read
/// ([`crate::model::PackedWeights::for_training`]: none for the bigram model
/// or with LoRA): every block's linear layers and the LM head, in panels of
/// 16 columns and pairs of rows.
fn bf16_copy_bytes(cfg: &ModelConfig) -> u128 {
    if cfg.arch == Arch::Bigram || cfg.lora.is_some() {
        return 0;
    }
    let panels = |(fan_in, fan_out): (u128, u128)| 64 * fan_out.div_ceil(16) * fan_in.div_ceil(2);
    let [qkv, proj, fc, mlp_proj, head] = linear_shapes(cfg).map(panels);
    cfg.n_layer as u128 * (qkv + proj + fc + mlp_proj) + head
}

/// What training `cfg` with batches of `batch` sequences needs: the weights,
/// and the gradients and AdamW moments of the `trained` parameters (all, or a
/// fine-tune's unfrozen ones); the activations; the attention scratch; with
/// `dtype` bf16, the bf16 copy of the weights and the products' converted
/// operands; and the host
/// copies a checkpoint is written from (or a resume read into): trained
/// weights and moments as bytes, then serialised, 24 bytes a parameter.
pub fn training(
    cfg: &ModelConfig,
    batch: usize,
    trained: Option<usize>,
    dtype: Dtype,
) -> Result<Estimate> {
    let p = param_count(cfg)? as u128;
    let trained = trained.map_or(p, |n| n as u128);
    let (b, t) = (batch, cfg.block_size);
    let rows = b.checked_mul(t).ok_or_else(|| overflow(cfg))?;
    let estimate = Estimate {
        parts: vec![
            (
                "parameters, gradients and AdamW moments",
                (p + 3 * trained) * F32,
            ),
            (
                "activations",
                activation_floats(cfg, rows, Purpose::Training) * F32,
            ),
            (
                "attention scratch",
                attention_scratch_floats(cfg, b, t) * F32,
            ),
            (
                "bf16 copy of the weights and operands of the products",
                match dtype {
                    Dtype::F32 => 0,
                    Dtype::Bf16 => bf16_copy_bytes(cfg) + bf16_scratch_bytes(cfg, rows),
                },
            ),
            ("checkpoint copies", 6 * trained * F32),
            ("token batches", 4 * rows as u128 * 4),
        ],
    };
    addressable(estimate, cfg)
}

/// What decoding's weights take as `weights` (`--weights`):
/// - f32: the parameters, and the file they are read from;
/// - packed (bf16, q8_0, q4_0): every parameter at the type's bytes per
///   value (norms and biases, which stay f32, are a rounding error beside
///   the matrices), and the largest matrix in f32 while it is packed.
fn decoding_weights(cfg: &ModelConfig, weights: WeightType) -> Result<Vec<(&'static str, u128)>> {
    let p = param_count(cfg)? as u128;
    if weights == WeightType::F32 {
        return Ok(vec![(
            "parameters and the file they are read from",
            2 * p * F32,
        )]);
    }
    let (bytes, per) = (weights.block_bytes() as u128, weights.block_len() as u128);
    let widest = [cfg.vocab_size, cfg.fc_width(), cfg.qkv_width()]
        .into_iter()
        .max()
        .unwrap_or(0) as u128;
    Ok(vec![
        ("packed weights", p.div_ceil(per) * bytes),
        (
            "one matrix in f32 while it is packed",
            widest * cfg.n_embd as u128 * F32,
        ),
    ])
}

/// What sampling from `cfg` with `weights` needs: the weights, the inference
/// activations with the KV cache (every layer's `qkv` rows), and the
/// attention scratch of one sequence.
pub fn sampling(cfg: &ModelConfig, weights: WeightType) -> Result<Estimate> {
    let t = cfg.block_size;
    let mut parts = decoding_weights(cfg, weights)?;
    parts.extend([
        (
            "activations and KV cache",
            activation_floats(cfg, t, Purpose::Inference) * F32,
        ),
        (
            "attention scratch",
            attention_scratch_floats(cfg, 1, t) * F32,
        ),
    ]);
    addressable(Estimate { parts }, cfg)
}

/// What serving `cfg` with `weights` to `slots` sequences at once needs: the
/// weights, one KV cache (inference activations) per slot, and a decoding batch.
pub fn serving(cfg: &ModelConfig, slots: usize, weights: WeightType) -> Result<Estimate> {
    let t = cfg.block_size;
    let per_slot = activation_floats(cfg, t, Purpose::Inference) * F32;
    let mut parts = decoding_weights(cfg, weights)?;
    parts.extend([
        ("a KV cache per --parallel slot", slots as u128 * per_slot),
        (
            "the decoding batch",
            activation_floats(cfg, slots, Purpose::Decoding) * F32,
        ),
        (
            "attention scratch",
            attention_scratch_floats(cfg, 1, t) * F32,
        ),
    ]);
    addressable(Estimate { parts }, cfg)
}

/// An estimate beyond what a process can address is an overflow whatever
/// the machine: allocating it would abort.
fn addressable(estimate: Estimate, cfg: &ModelConfig) -> Result<Estimate> {
    if estimate.total() > isize::MAX as u128 {
        return Err(overflow(cfg));
    }
    Ok(estimate)
}

/// Memory the machine can give this process, and where that figure comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Available {
    pub bytes: u128,
    pub source: String,
}

/// The first number in a `/proc/meminfo` line `key: N kB`, in bytes.
fn meminfo_bytes(text: &str, key: &str) -> Option<u128> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u128 = line[key.len()..]
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// `limit - usage` of a cgroup, from its two files (`max` means no limit).
fn cgroup_room(limit: &Path, usage: &Path) -> Option<u128> {
    let limit: u128 = std::fs::read_to_string(limit).ok()?.trim().parse().ok()?;
    let usage: u128 = std::fs::read_to_string(usage)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    Some(limit.saturating_sub(usage))
}

/// What is available now: `MemAvailable` from `/proc/meminfo`, or less when
/// a cgroup (a container, a systemd slice) limits this process (v2
/// `memory.max`, v1 `memory.limit_in_bytes`). `None` where none of these
/// can be read (not Linux): then nothing is checked.
pub fn available() -> Option<Available> {
    let mut best: Option<Available> = None;
    let mut consider = |bytes: Option<u128>, source: &str| {
        if let Some(bytes) = bytes
            && best.as_ref().is_none_or(|b| bytes < b.bytes)
        {
            best = Some(Available {
                bytes,
                source: source.to_string(),
            });
        }
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    consider(
        meminfo.and_then(|t| meminfo_bytes(&t, "MemAvailable")),
        "MemAvailable in /proc/meminfo",
    );
    let v2 = Path::new("/sys/fs/cgroup");
    consider(
        cgroup_room(&v2.join("memory.max"), &v2.join("memory.current")),
        "the cgroup limit in /sys/fs/cgroup/memory.max",
    );
    let v1 = Path::new("/sys/fs/cgroup/memory");
    consider(
        cgroup_room(
            &v1.join("memory.limit_in_bytes"),
            &v1.join("memory.usage_in_bytes"),
        ),
        "the cgroup limit in /sys/fs/cgroup/memory/memory.limit_in_bytes",
    );
    best
}

/// Refuse `estimate` (of `what`, e.g. "training") when it exceeds `available`.
pub fn check(estimate: &Estimate, what: &str, available: Option<&Available>) -> Result<()> {
    let Some(available) = available else {
        return Ok(());
    };
    let needed = estimate.total();
    if needed <= available.bytes {
        return Ok(());
    }
    Err(Error::Memory(format!(
        "{what} needs about {} of memory ({}), but {} is available ({}); use a smaller \
         --n-layer, --n-embd, --block or --batch, or pass --ignore-memory-check to try anyway",
        format_bytes(needed),
        estimate.describe(),
        format_bytes(available.bytes),
        available.source
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::AttentionDims;
    use crate::model::{Activation, Norm};

    fn cfg(n_layer: usize, n_embd: usize, block: usize) -> ModelConfig {
        ModelConfig {
            arch: Arch::Gpt,
            vocab_size: 65,
            block_size: block,
            n_layer,
            n_head: 1,
            n_embd,
            dropout: 0.0,
            norm: Norm::Pre,
            activation: Activation::Gelu,
            tie_embeddings: false,
            bias: true,
            qkv_bias: true,
            lm_head_bias: true,
            llama: None,
            lora: None,
        }
    }

    #[test]
    fn parameter_count_is_the_layouts() {
        for bits in 0..16u32 {
            let c = ModelConfig {
                bias: bits & 1 != 0,
                qkv_bias: bits & 2 != 0,
                tie_embeddings: bits & 4 != 0,
                lm_head_bias: bits & 8 != 0,
                lora: None,
                ..cfg(3, 24, 16)
            };
            assert_eq!(
                param_count(&c).unwrap(),
                ParamLayout::new(&c).total,
                "{c:?}"
            );
        }
        let bigram = ModelConfig {
            arch: Arch::Bigram,
            ..cfg(3, 24, 16)
        };
        assert_eq!(param_count(&bigram).unwrap(), 65 * 65);
        assert_eq!(
            param_count(&bigram).unwrap(),
            ParamLayout::new(&bigram).total
        );
    }

    /// With adapters: every GPT-2 target, and every Llama target alone (on
    /// grouped-query attention, where k and v are narrower than q).
    #[test]
    fn lora_parameter_count_is_the_layouts() {
        use crate::model::{LlamaConfig, LoraConfig, LoraTarget};
        let lora = |targets: &[LoraTarget]| {
            Some(LoraConfig {
                rank: 3,
                alpha: 6.0,
                targets: targets.to_vec(),
            })
        };
        let gpt = ModelConfig {
            lora: lora(&LoraTarget::defaults(Arch::Gpt)),
            ..cfg(2, 24, 16)
        };
        let llama = ModelConfig {
            arch: Arch::Llama,
            n_head: 4,
            norm: Norm::Pre,
            activation: Activation::Silu,
            bias: false,
            lm_head_bias: false,
            llama: Some(LlamaConfig {
                n_kv_head: 2,
                ..LlamaConfig::for_shape(24, 4)
            }),
            ..cfg(2, 24, 16)
        };
        let mut configs = vec![gpt];
        for target in <LoraTarget as clap::ValueEnum>::value_variants() {
            if target.belongs_to(Arch::Llama) {
                configs.push(ModelConfig {
                    lora: lora(&[*target]),
                    ..llama.clone()
                });
            }
        }
        for c in configs {
            c.validate().unwrap();
            let layout = ParamLayout::new(&c);
            assert!(layout.total > layout.base_total, "{c:?}");
            assert_eq!(param_count(&c).unwrap(), layout.total, "{c:?}");
        }
    }

    #[test]
    fn attention_scratch_matches_the_kernel() {
        let d = AttentionDims::fused(3, 7, 0, 8, 2, 2);
        let c = cfg(1, 8, 7);
        assert_eq!(
            attention_scratch_floats(&c, 3, 7),
            crate::backend::cpu::attention::scratch_len(d) as u128
        );
    }

    /// The activations counted are those `Activations` allocates.
    #[test]
    fn activations_match_what_is_allocated() {
        use crate::backend::cpu::Cpu;
        use crate::model::Activations;
        let c = cfg(2, 8, 5);
        let acts = Activations::training(&Cpu::new(), &c, 3, 5).unwrap();
        let mut allocated = 0u128;
        let _ = acts.tensors.try_map(|t| {
            allocated += t.len() as u128;
            Ok(())
        });
        let _ = acts.scratch.try_map(|t| {
            allocated += t.len() as u128;
            Ok(())
        });
        assert_eq!(allocated, activation_floats(&c, 15, Purpose::Training));
    }

    /// The bf16 operands' part bounds what a bf16 training step holds, and
    /// is not loose by more than twice (char-cpu, and a Llama with LoRA).
    #[test]
    fn bf16_scratch_bounds_what_a_step_holds() {
        use crate::backend::cpu::Cpu;
        use crate::model::packed::matrices;
        use crate::model::{LoraConfig, LoraTarget, PackedWeights};
        use crate::train::{Preset, Trainer};
        let mut lora = Preset::LlamaChar.config();
        lora.model.lora = Some(LoraConfig {
            rank: 4,
            alpha: 8.0,
            targets: vec![LoraTarget::QProj, LoraTarget::VProj],
        });
        for mut config in [Preset::CharCpu.config(), lora] {
            (config.model.vocab_size, config.batch_size) = (65, 2);
            let tokens: Vec<u32> = (0..4000u32).map(|i| i % 65).collect();
            let be = Cpu::with_dtype(Dtype::Bf16);
            let mut trainer = Trainer::new(&be, &config, (&tokens, &tokens), None, None).unwrap();
            trainer.step(0).unwrap();
            let rows = config.batch_size * config.model.block_size;
            let bound = bf16_scratch_bytes(&config.model, rows);
            let held = be.bf16_scratch_bytes() as u128;
            assert!(
                held <= bound && 2 * held >= bound,
                "held {held}, estimated {bound}"
            );
            let copy = bf16_copy_bytes(&config.model);
            let model = crate::model::Model::new(config.model.clone()).unwrap();
            let params = vec![0.0; model.num_params()];
            let held_copy: usize = match PackedWeights::for_training(&be, &model, &params).unwrap()
            {
                Some(copy) => matrices(&model)
                    .unwrap()
                    .iter()
                    .filter_map(|m| copy.get(&m.linear.weight))
                    .map(|p| p.byte_len())
                    .sum(),
                None => 0,
            };
            let held_copy = held_copy as u128;
            assert_eq!(copy, held_copy, "the bf16 copy's bytes");
            let f32_run = training(&config.model, 2, None, Dtype::F32).unwrap();
            let bf16_run = training(&config.model, 2, None, Dtype::Bf16).unwrap();
            assert_eq!(bf16_run.total() - f32_run.total(), bound + copy);
        }
    }

    /// Packed weights are estimated at their own bytes, not f32's: at least
    /// what packing a model really holds (the packed matrices plus the
    /// tensors left f32), and not twice that.
    #[test]
    fn packed_weights_are_estimated_at_their_own_bytes() {
        use crate::backend::cpu::{Cpu, Packed};
        use crate::model::{Model, PackedWeights, packed::matrices};
        let c = cfg(2, 64, 16);
        let model = Model::new(c.clone()).unwrap();
        let params = vec![0.5f32; model.num_params()];
        let weights = |ty| {
            let estimate = sampling(&c, ty).unwrap();
            estimate.parts[..2].iter().map(|(_, b)| b).sum::<u128>()
        };
        for ty in [WeightType::Q8_0, WeightType::Q4_0] {
            let packed = PackedWeights::from_params(&Cpu::new(), &model, &params, ty).unwrap();
            let mut held = 0u128;
            let mut f32_left = model.num_params() as u128;
            for m in matrices(&model).unwrap() {
                let Some(Packed::Quant(q)) = packed.get(&m.linear.weight) else {
                    panic!("{} is not packed", m.name);
                };
                held += q.byte_len() as u128;
                f32_left -= m.linear.weight.len() as u128;
            }
            held += f32_left * F32;
            let estimated = weights(ty);
            assert!(
                estimated >= held && estimated <= 2 * held,
                "{ty:?}: estimated {estimated}, held {held}"
            );
            assert!(3 * estimated < weights(WeightType::F32), "{ty:?}");
        }
    }

    #[test]
    fn sizes_beyond_64_bits_are_errors_not_panics() {
        let err = training(&cfg(1, 1 << 31, 64), 12, None, Dtype::F32)
            .unwrap_err()
            .to_string();
        assert!(err.contains("overflows"), "{err}");
        let err = training(&cfg(1, 64, usize::MAX / 2), 12, None, Dtype::F32)
            .unwrap_err()
            .to_string();
        assert!(err.contains("overflows"), "{err}");
        let err = sampling(&cfg(1, 1 << 62, 64), WeightType::F32)
            .unwrap_err()
            .to_string();
        assert!(err.contains("overflows"), "{err}");
    }

    #[test]
    fn too_big_for_the_machine_names_both_numbers_and_the_flag() {
        // 8 layers of 4096: about 1.6 G parameters, 26 GB before activations.
        let estimate = training(&cfg(8, 4096, 64), 12, None, Dtype::F32).unwrap();
        assert!(estimate.total() > 26_000_000_000, "{estimate:?}");
        let machine = Available {
            bytes: 8_000_000_000,
            source: "a test".into(),
        };
        let err = check(&estimate, "training", Some(&machine))
            .unwrap_err()
            .to_string();
        assert!(err.contains("8.0 GB is available (a test)"), "{err}");
        assert!(err.contains("--ignore-memory-check"), "{err}");
        assert!(err.contains(&format_bytes(estimate.total())), "{err}");
        let small = training(&cfg(1, 32, 16), 4, None, Dtype::F32).unwrap();
        check(&small, "training", Some(&machine)).unwrap();
        check(&estimate, "training", None).expect("nothing known, nothing refused");
    }

    #[test]
    fn meminfo_and_cgroup_files_parse() {
        let text = "MemTotal:       16384 kB\nMemAvailable:    2048 kB\n";
        assert_eq!(meminfo_bytes(text, "MemAvailable"), Some(2048 * 1024));
        assert_eq!(meminfo_bytes(text, "SwapFree"), None);
        let dir = tempfile::tempdir().unwrap();
        let (limit, usage) = (dir.path().join("max"), dir.path().join("current"));
        std::fs::write(&limit, "max\n").unwrap();
        assert_eq!(cgroup_room(&limit, &usage), None, "no limit");
        std::fs::write(&limit, "1000\n").unwrap();
        std::fs::write(&usage, "400\n").unwrap();
        assert_eq!(cgroup_room(&limit, &usage), Some(600));
        assert!(available().is_none_or(|a| a.bytes > 0));
    }
}
