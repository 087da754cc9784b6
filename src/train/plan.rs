//! Planning a run: [`resolve`] turns what was asked ([`Start`]: a new run,
//! a fine-tune, or a resumption; from the command line, the Python package
//! or a library caller) into one checked [`Plan`], everything the training
//! session needs, before anything is written.
//!
//! In order:
//! 1. the configuration, by kind: a new run's as given; a resumption's saved
//!    one changed by the overrides (the tokenizer and the model may not
//!    change); a fine-tune's from its parent ([`crate::finetune::policy`]);
//! 2. checked once ([`TrainConfig::validate`]);
//! 3. what the kind brings: a resumption's checkpoint and tokenizer (refused
//!    when the run is already as long as asked), a fine-tune's starting
//!    weights and tokenizer; every check that needs no data is done by now;
//! 4. the corpus and the tokenizer ([`corpus::read`]), which fix a new
//!    run's vocabulary;
//! 5. the memory check, once, against the device that trains
//!    ([`Safeguards::device_memory`]), with the model as it will be built.

use super::config::{TrainConfig, TrainOverrides};
use super::corpus::{self, Corpus};
use super::request::{FineTuneRequest, Start};
use super::run::RunFile;
use super::{Safeguards, guard};
use crate::checkpoint::{self, TrainState};
use crate::error::{Error, Result};
use crate::finetune::{self, Loaded, policy};
use crate::model::{Model, ModelConfig, ParamLayout};
use crate::tokenizer::{self, Tokenizer};
use std::path::{Path, PathBuf};

/// Everything a training session needs, checked.
pub struct Plan {
    pub config: TrainConfig,
    /// The corpus as given (`None`: the built-in one), recorded in the run.
    pub data: Option<PathBuf>,
    pub corpus: Corpus,
    pub tokenizer: Box<dyn Tokenizer>,
    /// A fine-tune's starting weights (`None`: random, or the checkpoint's).
    pub weights: Option<Vec<f32>>,
    /// A resumed run's checkpoint.
    pub state: Option<TrainState>,
    /// A fine-tune's parent, whose chat files ([`crate::chat::jinja::CHAT_FILES`]) the run gets.
    pub parent_dir: Option<PathBuf>,
}

/// Where a configuration came from, with what step 3 needs of it.
enum Origin {
    New,
    Resume(Box<RunFile>),
    FineTune(Box<Loaded>, Option<Box<dyn Tokenizer>>),
}

/// What a resumption or a fine-tune brings besides its configuration.
#[derive(Default)]
struct Brought {
    data: Option<PathBuf>,
    tokenizer: Option<Box<dyn Tokenizer>>,
    weights: Option<Vec<f32>>,
    state: Option<TrainState>,
    parent_dir: Option<PathBuf>,
}

/// The checked plan of `start`, training on `data` (`None`: the built-in
/// corpus, or a resumed run's own) into the run directory `out`.
pub fn resolve(
    start: &Start,
    data: Option<PathBuf>,
    out: &Path,
    guards: &Safeguards,
) -> Result<Plan> {
    let (mut config, origin) = match start {
        Start::New(config) => ((**config).clone(), Origin::New),
        Start::Resume(overrides) => resumed_config(out, overrides)?,
        Start::FineTune(req) => fine_tune_config(req)?,
    };
    config.validate()?;
    let brought = match origin {
        Origin::New => Brought {
            data,
            ..Default::default()
        },
        Origin::Resume(run) => resume(out, &config, *run, data)?,
        Origin::FineTune(parent, tokenizer) => fine_tune(*parent, tokenizer, &config, data)?,
    };
    let chat_dir = brought.parent_dir.as_deref().unwrap_or(out);
    let resumed = brought.state.is_some();
    let flags = (resumed, guards.allow_partial);
    let data = brought.data.as_deref();
    let (corpus, tokenizer) = corpus::read(&mut config, data, brought.tokenizer, chat_dir, flags)?;
    guard::check_memory(&config, guards)?;
    Ok(Plan {
        config,
        data: brought.data,
        corpus,
        tokenizer,
        weights: brought.weights,
        state: brought.state,
        parent_dir: brought.parent_dir,
    })
}

/// The saved run in `out`, changed by `overrides`: refused if they change
/// the tokenizer or the model.
fn resumed_config(out: &Path, overrides: &[TrainOverrides]) -> Result<(TrainConfig, Origin)> {
    guard::check_resumable(out)?;
    let run = RunFile::load(out)?;
    let mut config = run.config.clone();
    overrides.iter().for_each(|o| o.apply(&mut config));
    if config.tokenizer != run.config.tokenizer {
        return Err(Error::Config(format!(
            "{}: the run was trained with the {} tokenizer, which cannot change on --resume",
            out.display(),
            run.config.tokenizer
        )));
    }
    let saved = checkpoint::load_config(out)?;
    if (ModelConfig {
        vocab_size: saved.vocab_size,
        ..config.model.clone()
    }) != saved
    {
        return Err(Error::Config(format!(
            "{}: the model options differ from the run being resumed; only training options \
             (e.g. --max-iters, --lr, --eval-interval) can change on --resume",
            out.display()
        )));
    }
    config.model = saved;
    Ok((config, Origin::Resume(Box::new(run))))
}

/// A resumed run's checkpoint, tokenizer and (for a fine-tune) starting
/// weights: refused if the run is already as long as asked.
fn resume(
    out: &Path,
    config: &TrainConfig,
    run: RunFile,
    data: Option<PathBuf>,
) -> Result<Brought> {
    let layout = ParamLayout::new(&config.model);
    let lora = config.model.lora.is_some();
    let from = finetune::trainable_from(config.finetune.as_ref(), &layout, lora)?;
    let state = checkpoint::load_train_state(out, layout.total - from)?;
    if state.step >= config.max_iters {
        return Err(Error::Config(format!(
            "{} is already trained for {} iterations; pass a larger --max-iters to continue",
            out.display(),
            state.step
        )));
    }
    let weights = match &config.finetune {
        Some(ft) => Some(start_weights(
            &finetune::reload_parent(&ft.init_from)?,
            config,
        )?),
        None => None,
    };
    let tokenizer = tokenizer::load(&out.join(checkpoint::TOKENIZER_FILE))?;
    if let Some(new) = &data {
        warn_if_other_data(out, new, run.data.as_deref());
    }
    Ok(Brought {
        data: data.or(run.data),
        tokenizer: Some(tokenizer),
        weights,
        state: Some(state),
        parent_dir: None,
    })
}

/// A fine-tune of the model `req.init_from` names, configured by the
/// fine-tune policy; conversations may grow its tokenizer.
fn fine_tune_config(req: &FineTuneRequest) -> Result<(TrainConfig, Origin)> {
    let parent = finetune::load_parent(&req.init_from)?;
    let mut config = policy::model_config(req, &parent)?;
    let grown = policy::sft_tokenizer(&parent, &mut config)?;
    Ok((config, Origin::FineTune(Box::new(parent), grown)))
}

/// A fine-tune's starting weights and tokenizer (the parent's, or `grown`).
fn fine_tune(
    parent: Loaded,
    grown: Option<Box<dyn Tokenizer>>,
    config: &TrainConfig,
    data: Option<PathBuf>,
) -> Result<Brought> {
    let layout = ParamLayout::new(&config.model);
    let lora = config.model.lora.is_some();
    finetune::trainable_from(config.finetune.as_ref(), &layout, lora)?;
    let weights = start_weights(&parent, config)?;
    Ok(Brought {
        data,
        parent_dir: Some(parent.parent.path.clone()),
        tokenizer: Some(grown.unwrap_or(parent.tokenizer)),
        weights: Some(weights),
        state: None,
    })
}

/// The starting weights of the fine-tune `config` describes.
fn start_weights(parent: &Loaded, config: &TrainConfig) -> Result<Vec<f32>> {
    let model = Model::new(config.model.clone())?;
    finetune::start_params(parent, &model, config.seed)
}

/// A resumed run given `--data` other than what it trained on goes on with
/// the new data (to fine-tune, say), but not without saying so.
fn warn_if_other_data(out: &Path, new: &Path, old: Option<&Path>) {
    let new = std::fs::canonicalize(new).unwrap_or_else(|_| new.to_path_buf());
    if old == Some(new.as_path()) {
        return;
    }
    let old = old.map_or("the built-in demo corpus".to_string(), |p| {
        p.display().to_string()
    });
    crate::diag::warn(format!(
        "{} was trained on {old}; this session continues on {}",
        out.display(),
        new.display()
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::{Observe, Preset, TrainJob};
    use std::sync::atomic::AtomicBool;

    /// The char-cpu preset made tiny: one block, a few steps.
    fn tiny() -> TrainConfig {
        let mut config = Preset::CharCpu.config();
        config.model.n_layer = 1;
        config.model.n_embd = 16;
        config.model.n_head = 2;
        config.model.block_size = 8;
        config.batch_size = 2;
        config.max_iters = 1;
        config.eval_interval = 1;
        config.eval_iters = 1;
        config
    }

    fn new_run(config: TrainConfig) -> Start {
        Start::New(Box::new(config))
    }

    fn guards() -> Safeguards {
        Safeguards::default()
    }

    fn err(result: Result<Plan>) -> String {
        result.err().expect("an error").to_string()
    }

    /// Train `start` into `out` on the built-in corpus.
    fn train(start: Start, out: &Path) {
        train_with(&crate::backend::cpu::Cpu::new(), start, out);
    }

    /// [`train`] on `be`.
    fn train_with(be: &crate::backend::cpu::Cpu, start: Start, out: &Path) {
        let stop = AtomicBool::new(false);
        let observe = Observe {
            plot: None,
            ..Observe::default()
        };
        let job = TrainJob {
            data: None,
            out: out.to_path_buf(),
            start,
            progress: false,
            stop: &stop,
            guards: guards(),
            observe,
        };
        crate::train::train(be, job).unwrap();
    }

    fn resume(max_iters: u64, more: TrainOverrides) -> Start {
        let asked = TrainOverrides {
            max_iters: Some(max_iters),
            ..Default::default()
        };
        Start::Resume(vec![asked, more])
    }

    #[test]
    fn a_new_run_gets_its_vocabulary_and_split_from_the_corpus() {
        let dir = tempfile::tempdir().unwrap();
        let plan = resolve(&new_run(tiny()), None, dir.path(), &guards()).unwrap();
        assert_eq!(
            plan.config.model.vocab_size, 65,
            "Tiny Shakespeare's characters"
        );
        assert_eq!(plan.tokenizer.vocab_size(), 65);
        assert!(plan.state.is_none() && plan.weights.is_none() && plan.parent_dir.is_none());
        let (train, val) = plan.corpus.splits();
        let share = val.len() as f64 / (train.len() + val.len()) as f64;
        assert!((share - 0.1).abs() < 1e-4, "{share}");
    }

    #[test]
    fn a_new_run_is_checked_once_against_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let mut bad = tiny();
        bad.lr = f32::NAN;
        assert!(err(resolve(&new_run(bad), None, dir.path(), &guards())).contains("lr"));
        let small_gpu = Safeguards {
            device_memory: Some(1000),
            ..guards()
        };
        let e = err(resolve(&new_run(tiny()), None, dir.path(), &small_gpu));
        assert!(
            e.contains("needs about") && e.contains("the GPU's memory"),
            "{e}"
        );
        let ignored = Safeguards {
            ignore_memory_check: true,
            ..small_gpu
        };
        assert!(resolve(&new_run(tiny()), None, dir.path(), &ignored).is_ok());
    }

    /// Checkpoints hold the f32 masters whatever the products' type: a run
    /// started with f32 products goes on with bf16 ones, and back.
    #[test]
    fn a_run_changes_its_products_dtype_on_resume() {
        use crate::backend::cpu::{Cpu, Dtype};
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        train(new_run(tiny()), &run);
        let none = TrainOverrides::default;
        train_with(&Cpu::with_dtype(Dtype::Bf16), resume(3, none()), &run);
        let plan = resolve(&resume(4, none()), None, &run, &guards()).unwrap();
        let state = plan.state.expect("the bf16 session's checkpoint");
        assert_eq!(state.step, 3);
        let masters = state.params.iter().filter(|w| w.to_bits() & 0xffff != 0);
        assert!(
            masters.count() > state.params.len() / 2,
            "the checkpoint holds f32 weights, not their bf16 copies"
        );
        train(resume(4, none()), &run);
        let plan = resolve(&resume(5, none()), None, &run, &guards()).unwrap();
        assert_eq!(plan.state.map(|s| s.step), Some(4));
    }

    #[test]
    fn resume_and_fine_tune_start_from_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        train(new_run(tiny()), &base);
        let none = TrainOverrides::default;

        let plan = resolve(&resume(3, none()), None, &base, &guards()).unwrap();
        assert_eq!(plan.state.as_ref().map(|s| s.step), Some(1));
        assert_eq!(
            (plan.config.max_iters, plan.config.model.vocab_size),
            (3, 65)
        );
        assert_eq!(plan.data, None, "the run's own corpus");
        let e = err(resolve(&resume(1, none()), None, &base, &guards()));
        assert!(e.contains("already trained for 1 iterations"), "{e}");
        let deeper = TrainOverrides {
            n_layer: Some(2),
            ..none()
        };
        let e = err(resolve(&resume(3, deeper), None, &base, &guards()));
        assert!(e.contains("model options differ"), "{e}");
        let gpt2 = TrainOverrides {
            tokenizer: Some(crate::tokenizer::TokenizerSpec::Gpt2),
            ..none()
        };
        let e = err(resolve(&resume(3, gpt2), None, &base, &guards()));
        assert!(e.contains("cannot change on --resume"), "{e}");
        let nowhere = dir.path().join("nowhere");
        assert!(resolve(&resume(3, none()), None, &nowhere, &guards()).is_err());

        let fine_tune = |given: TrainOverrides, lora| {
            let config = policy::training_config(None, None, &given, &lora, false).unwrap();
            Start::FineTune(Box::new(FineTuneRequest {
                config,
                given,
                init_from: base.display().to_string(),
                freeze_embeddings: false,
                freeze_layers: 0,
                lora,
            }))
        };
        let out = dir.path().join("tuned");
        let plan = resolve(&fine_tune(none(), None), None, &out, &guards()).unwrap();
        let parent = crate::checkpoint::load_config(&base).unwrap();
        assert_eq!(plan.config.model, parent, "the parent's model");
        assert_eq!(
            plan.parent_dir.as_deref(),
            Some(base.canonicalize().unwrap().as_path())
        );
        let (_, parent_weights) = crate::finetune::load_run(&base).unwrap();
        assert_eq!(plan.weights.as_deref(), Some(parent_weights.as_slice()));
        assert_eq!(plan.config.lr, Preset::Finetune.config().lr);
        let lora = Some(policy::lora(2, None, None));
        let plan = resolve(&fine_tune(none(), lora), None, &out, &guards()).unwrap();
        assert_eq!(plan.config.lr, policy::LORA_LR, "the one LoRA default");
        let targets = &plan.config.model.lora.as_ref().unwrap().targets;
        assert_eq!(*targets, crate::model::LoraTarget::defaults(parent.arch));
        for (given, needle) in [
            (
                TrainOverrides {
                    n_embd: Some(32),
                    ..none()
                },
                "--n-embd cannot be used with --init-from",
            ),
            (
                TrainOverrides {
                    block_size: Some(9),
                    ..none()
                },
                "--block 9 is longer than the parent's",
            ),
        ] {
            let e = err(resolve(&fine_tune(given, None), None, &out, &guards()));
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn the_shape_flags_are_the_models() {
        let given = TrainOverrides {
            n_layer: Some(2),
            rope_theta: Some(1.0),
            block_size: Some(8),
            lr: Some(1.0),
            ..Default::default()
        };
        assert_eq!(given.shape_flags(), ["--n-layer", "--rope-theta"]);
        assert!(TrainOverrides::default().shape_flags().is_empty());
    }
}
