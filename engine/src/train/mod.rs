//! LoRA fine-tuning with the base frozen in its file's quantization (instruction finetuning as in *Build a Large
//! Language Model From Scratch*, ch. 7). [`pass::loss_and_grads`] runs the model's forward pass in f32 keeping what
//! the backward pass needs, the next-token cross-entropy over the scored targets, and the backward pass through
//! every op down to the gradients of the LoRA matrices; [`TrainBackend`] is what a backend adds for it.

pub mod backend;
pub mod data;
pub mod export;
pub mod gguf_export;
pub mod job;
pub mod lora;
pub mod optim;
pub mod pass;
pub mod score;
pub mod trainer;

pub use backend::TrainBackend;
pub use lora::{DeviceLora, Grads};
pub use pass::{logits, loss, loss_and_grads, loss_and_grads_within, Example, Outcome};
pub use trainer::{StepReport, TrainSettings, TrainState, Trainer, DEFAULT_TAPE_BUDGET};
