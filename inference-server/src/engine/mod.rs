//! The tensor engine: `Tensor`, `Shape`, `DType`, `Device` and the ops the models need.
//! Storage and backends stay private so a CUDA backend can slot in without touching model code.
