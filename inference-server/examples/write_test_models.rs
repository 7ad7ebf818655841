//! Writes the tiny test models: `{sd1,sd2}-{diffusers,single}-{f32,f16}` under the directory
//! given as the only argument (diffusers folders, single files end in `.safetensors`).

use std::path::PathBuf;
use std::process::ExitCode;

use inference_server::model::testmodel::write_test_model;
use inference_server::model::weights::{Layout, StoredDType, Variant};

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: write_test_models OUT_DIR");
        return ExitCode::from(2);
    };
    for (variant, v) in [(Variant::Sd1, "sd1"), (Variant::Sd2, "sd2")] {
        for (dtype, d) in [(StoredDType::F32, "f32"), (StoredDType::F16, "f16")] {
            for (layout, name) in [
                (Layout::Diffusers, format!("{v}-diffusers-{d}")),
                (Layout::SingleFile, format!("{v}-single-{d}.safetensors")),
            ] {
                let out = dir.join(&name);
                if let Err(e) = write_test_model(&out, variant, layout, dtype) {
                    eprintln!("{name}: {e}");
                    return ExitCode::FAILURE;
                }
                println!("{}", out.display());
            }
        }
    }
    ExitCode::SUCCESS
}
