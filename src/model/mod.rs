//! The models: the course's bigram table and a GPT, with forward and backward
//! written once over the layer kernels (one file per layer, each opening with
//! its math).

pub mod activation;
pub mod attention;
pub mod config;
pub mod decode;
pub mod dropout;
pub mod embedding;
pub mod gpt;
pub mod init;
pub mod layernorm;
pub mod linear;
pub mod loss;
pub mod params;

pub use config::{Activation, Arch, ModelConfig, Norm};
pub use decode::KvCache;
pub use gpt::{Activations, Mode, Model};
pub use params::{ParamLayout, TensorSpec};
