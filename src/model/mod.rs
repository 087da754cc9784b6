//! The models: the course's bigram table and a GPT, with forward and backward
//! written once ([`gpt`], [`block`]) as calls to a [`crate::backend::Backend`],
//! over parameters laid out by [`params`] and activations sized by
//! [`activations`]. The kernels themselves, each with its math, live in
//! `backend/cpu/`.

pub mod activations;
pub mod block;
pub mod config;
pub mod gpt;
pub mod grads;
pub mod init;
pub mod layers;
pub mod lora;
pub mod packed;
pub mod params;
pub mod rope;
pub mod score;

pub use activations::{Activations, Purpose, Window};
pub use config::{
    Activation, Arch, GPT_LAYER_NORM_EPS, LlamaConfig, LoraConfig, LoraTarget, ModelConfig, Norm,
    RopeScaling,
};
pub use gpt::{Mode, Model};
pub use grads::Grads;
pub use layers::Weights;
pub use packed::PackedWeights;
pub use params::{ParamLayout, TensorSpec, WeightLayout};
