//! What the test modules share: the engine helpers ([`engine`], re-exported),
//! [`test_device!`], which runs a test once per available device, and [`standin_search_path`].
#![allow(dead_code)]

mod engine;

pub use engine::*;

/// `LD_LIBRARY_PATH` for a child process that should find the standin's libcuda, cuBLAS and
/// cuBLASLt (`engine/cuda/emu/standin/`) first, as it would the NVIDIA ones, and everything
/// else (NVRTC) where this process finds it.
pub fn standin_search_path() -> String {
    let standin = env!("SDSERVE_STANDIN_DIR");
    match std::env::var("LD_LIBRARY_PATH") {
        Ok(rest) if !rest.is_empty() => format!("{standin}:{rest}"),
        _ => standin.to_string(),
    }
}

/// `test_device!(name)` turns `fn name(device: &Device)` into one `#[test]` per available
/// device, as candle's `test_device!`: it expands to a module `name` holding a test per device
/// that calls `super::name(&device)`, so the test reports as `name::cpu`, `name::cuda`, ...
///
/// Devices: `cpu` (`Device::Cpu`) and `cuda_emu` (the CUDA backend under the CUDA-on-CPU
/// emulator, in builds with the `cuda-emu` feature, which this crate's tests turn on). The
/// emulator runs the whole CUDA code path (storage, allocator, launch configurations, our
/// kernels), so these tests are the CUDA acceptance suite. A real GPU would be one more line:
/// - a real GPU, which runs only where one is present and otherwise returns early with a
///   note on stderr:
///   `#[test] fn cuda() { match Device::parse("cuda:0") { Ok(d) => super::$name(&d), Err(e) => eprintln!("skipped: no CUDA device ({e})") } }`
///
/// Attributes after the name go on every device's test, e.g.
/// `test_device!(full_size_sd15, #[ignore = "needs the full-size weights"]);`.
///
/// Every test using the macro then runs on the new device unchanged; tests that compare with
/// goldens keep their tolerances.
#[macro_export]
macro_rules! test_device {
    ($name:ident $(, #[$attr:meta])* $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use inference_server::engine::Device;

            #[test]
            $(#[$attr])*
            fn cpu() {
                super::$name(&Device::Cpu);
            }

            #[cfg(feature = "cuda-emu")]
            #[test]
            $(#[$attr])*
            fn cuda_emu() {
                super::$name(&Device::parse("cuda-emu").expect("cuda-emu device"));
            }
        }
    };
}
