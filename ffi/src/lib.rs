#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod error;
mod model;

pub use error::{EdgefleetStatus, edgefleet_last_error};
pub use model::{
    EDGEFLEET_MAX_RANK, EdgefleetModel, EdgefleetTensorInfo, edgefleet_model_arena_size, edgefleet_model_free,
    edgefleet_model_input_count, edgefleet_model_input_info, edgefleet_model_invoke, edgefleet_model_load,
    edgefleet_model_output_count, edgefleet_model_output_f32, edgefleet_model_output_i8, edgefleet_model_output_info,
    edgefleet_model_set_input_f32, edgefleet_model_set_input_i8, edgefleet_model_set_threads, edgefleet_version,
};
