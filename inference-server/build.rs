//! Build script of inference-server. With the `cuda-emu` feature it compiles the CUDA-on-CPU
//! emulator (`src/engine/cuda/emu/`) and every kernel file (`src/engine/cuda/kernels/*.cu`)
//! with the host C++ compiler, so the same kernels NVRTC compiles for the GPU run in
//! `cargo test`. Without the feature it does nothing: normal builds need no C++ compiler.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "cuda-emu")]
    emu::build();
}

#[cfg(feature = "cuda-emu")]
mod emu {
    use std::fmt::Write as _;
    use std::path::{Path, PathBuf};

    /// Compiles the emulator runtime, its self-test kernels and each kernel file as its own
    /// translation unit into `libsdemu.a`, linked whole so that the static initializers that
    /// register each kernel by name are not dropped for being unreferenced.
    pub(super) fn build() {
        let manifest = PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
        );
        let out =
            PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("sdemu");
        std::fs::create_dir_all(&out).expect("create OUT_DIR/sdemu");
        let cuda = manifest.join("src/engine/cuda");
        let emu = cuda.join("emu");
        let kernels = cuda.join("kernels");
        println!("cargo:rerun-if-changed={}", emu.display());
        println!("cargo:rerun-if-changed={}", kernels.display());

        let mut units = vec![emu.join("selftest.cu")];
        let mut found: Vec<PathBuf> = std::fs::read_dir(&kernels)
            .expect("read src/engine/cuda/kernels")
            .map(|e| e.expect("read a kernels/ entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "cu"))
            .collect();
        found.sort();
        units.extend(found);

        let mut build = cc::Build::new();
        build
            .cpp(true)
            .std("c++17")
            .opt_level(2)
            .include(&emu)
            // Kernels carry `#pragma unroll` for NVRTC; g++ does not know it.
            .flag_if_supported("-Wno-unknown-pragmas")
            .file(emu.join("abi.cpp"))
            .file(emu.join("runtime.cpp"))
            .file(emu.join("fiber.cpp"))
            .link_lib_modifier("+whole-archive");
        for unit in &units {
            build.file(wrapper(&out, &emu, &kernels, unit));
        }
        build.compile("sdemu");
        standin(&emu, &out);
    }

    /// Links the standin (`emu/standin/`: libcuda, cuBLAS and cuBLASLt on the host, running
    /// kernels through this process's emulator) as `OUT_DIR/sdemu/standin/libsdstandin.so`, with
    /// `libcuda.so`, `libcublas.so` and `libcublasLt.so` pointing at it, so a process started
    /// with that folder first on `LD_LIBRARY_PATH` runs the GPU code path (driver.rs, lt.rs)
    /// without a GPU. The emulator's entry points are exported from every binary so the standin
    /// finds them with dlsym.
    fn standin(emu: &Path, out: &Path) {
        let src = emu.join("standin");
        let dir = out.join("standin");
        std::fs::create_dir_all(&dir).expect("create OUT_DIR/sdemu/standin");
        let mut build = cc::Build::new();
        build
            .cpp(true)
            .std("c++17")
            .opt_level(3)
            .pic(true)
            .cargo_metadata(false)
            .include(emu);
        for file in ["driver.cpp", "graph.cpp", "ptx.cpp", "gemm.cpp", "blas.cpp"] {
            build.file(src.join(file));
        }
        let objects = build.compile_intermediates();
        let lib = dir.join("libsdstandin.so");
        let status = build
            .get_compiler()
            .to_command()
            .arg("-shared")
            .arg("-o")
            .arg(&lib)
            .args(&objects)
            .arg("-ldl")
            .status()
            .expect("run the C++ compiler to link the standin");
        assert!(status.success(), "linking {} failed", lib.display());
        for name in ["libcuda.so", "libcublas.so", "libcublasLt.so"] {
            let link = dir.join(name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink("libsdstandin.so", &link).expect("link a standin name");
        }
        println!("cargo:rustc-env=SDSERVE_STANDIN_DIR={}", dir.display());
        for symbol in ["sdemu_launch", "sdemu_kernel_arity", "sdemu_last_error"] {
            println!("cargo:rustc-link-arg=-Wl,--export-dynamic-symbol={symbol}");
        }
    }

    /// Writes the translation unit for one `.cu` file: emu.h, then the prelude NVRTC would get,
    /// then the file. `SDEMU_TU` names the file's own shared-memory section (a C identifier).
    fn wrapper(out: &Path, emu: &Path, kernels: &Path, unit: &Path) -> PathBuf {
        let stem = unit
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("kernel file names are UTF-8");
        let ident: String = stem
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let mut text = String::new();
        writeln!(
            text,
            "// Generated by inference-server/build.rs for {}.",
            unit.display()
        )
        .unwrap();
        writeln!(text, "#define SDEMU_TU sdemu_sh_{ident}").unwrap();
        for header in [
            emu.join("emu.h"),
            kernels.join("prelude.cuh"),
            unit.to_path_buf(),
        ] {
            writeln!(text, "#include \"{}\"", header.display()).unwrap();
        }
        let path = out.join(format!("{ident}.cpp"));
        // Rewrite only on change, so cc's object stays fresh-looking to tools that watch mtimes.
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&path, text).expect("write an emulator wrapper");
        }
        path
    }
}
