//! Whether every launch the backend makes fits a real GPU's register file, which neither the
//! emulator nor the standin can see: ptxas (run by NVRTC for sm_80 and sm_90 machine code)
//! reports each kernel's registers per thread, and the standin logs the block sizes the device
//! and pipeline suites launched each kernel with.
//!
//! The rule (CUDA occupancy calculator, for sm_80 and sm_90 alike): registers are allocated per
//! warp in units of 256, so a kernel using R registers per thread takes ceil(32·R / 256)·256
//! per warp, and a block of W warps needs W times that, at most 65,536 (the registers one block
//! may use). A launch over it fails with CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES. ptxas also limits
//! static shared memory (48 KiB) itself, and the standin checks that at module load.

use std::collections::HashMap;
use std::ffi::CString;

use super::error::CudaError;
use super::nvrtc::{kernel_sources, nvrtc_options, ptx_source};

/// What ptxas reports for one kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Usage {
    /// Registers per thread.
    pub registers: u32,
    /// Bytes spilled to local memory (stores), a slow path worth knowing about.
    pub spill_stores: u32,
}

/// Registers one block may use on sm_80 and sm_90.
const REGISTERS_PER_BLOCK: u32 = 65_536;

/// Registers a block of `threads` threads of a kernel using `registers` per thread takes.
fn block_registers(registers: u32, threads: u32) -> u32 {
    let per_warp = (registers * 32).div_ceil(256) * 256;
    threads.div_ceil(32) * per_warp
}

/// Whether a block of `threads` threads of a kernel using `registers` per thread fits.
pub(super) fn registers_fit(registers: u32, threads: u32) -> bool {
    block_registers(registers, threads) <= REGISTERS_PER_BLOCK
}

/// Reads ptxas's `-v` report: "Compiling entry function 'NAME'", then its "N bytes spill
/// stores" and "Used N registers" lines.
pub(super) fn parse_report(log: &str) -> HashMap<String, Usage> {
    let mut out = HashMap::new();
    let mut current: Option<String> = None;
    let number_before = |line: &str, word: &str| -> Option<u32> {
        let at = line.find(word)?;
        line[..at].split_whitespace().last()?.parse().ok()
    };
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            out.insert(name.clone(), Usage::default());
            current = Some(name);
            continue;
        }
        let Some(usage) = current.as_ref().and_then(|n| out.get_mut(n)) else {
            continue;
        };
        if let Some(n) = number_before(line, "bytes spill stores") {
            usage.spill_stores = n;
        }
        if let Some(n) = line
            .split("Used ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
        {
            usage.registers = n;
        }
    }
    out
}

/// Compiles `family` to machine code for `arch` (`sm_80`, a real architecture) with the
/// backend's options and ptxas's report on, and returns the report.
pub(super) fn ptxas_report(family: &str, arch: &str) -> Result<String, CudaError> {
    let err = |log: String| CudaError::Nvrtc {
        file: format!("{family}.cu"),
        log,
    };
    let src = CString::new(ptx_source(family)?).map_err(|_| err("NUL in the source".into()))?;
    let name = CString::new(format!("{family}.cu")).map_err(|_| err("NUL in the name".into()))?;
    let mut options = nvrtc_options(arch)?;
    options[0] = format!("--gpu-architecture={arch}");
    options.push("--ptxas-options=-v".into());
    let prog =
        cudarc::nvrtc::result::create_program(&src, Some(&name)).map_err(|e| err(e.to_string()))?;
    // SAFETY: `prog` is a live program; the options are plain strings.
    let compiled = unsafe { cudarc::nvrtc::result::compile_program(prog, &options) };
    // SAFETY: as above; the log is copied out before the program is destroyed.
    let log = unsafe { cudarc::nvrtc::result::get_program_log(prog) }
        .map(|chars| {
            let bytes: Vec<u8> = chars
                .iter()
                .map(|&c| c as u8)
                .take_while(|&b| b != 0)
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        })
        .unwrap_or_default();
    // SAFETY: not used after this.
    let _ = unsafe { cudarc::nvrtc::result::destroy_program(prog) };
    compiled.map_err(|e| err(format!("{e}\n{log}")))?;
    Ok(log)
}

/// Checks every `<kernel> <threads>` line of the standin's launch log against ptxas's
/// register counts for `archs`; returns what does not fit (empty: all fit) and the number of
/// distinct kernels checked.
pub(super) fn check_launches(log: &str, archs: &[&str]) -> Result<(Vec<String>, usize), CudaError> {
    let mut launches: HashMap<&str, u32> = HashMap::new();
    for line in log.lines() {
        let mut parts = line.split_whitespace();
        if let (Some(name), Some(threads)) = (parts.next(), parts.next()) {
            let t: u32 = threads.parse().unwrap_or(u32::MAX);
            let max = launches.entry(name).or_default();
            *max = (*max).max(t);
        }
    }
    let mut problems = Vec::new();
    for arch in archs {
        let mut usage = HashMap::new();
        for (family, _) in kernel_sources() {
            usage.extend(parse_report(&ptxas_report(family, arch)?));
        }
        // The launch closest to the limit, for the test log.
        let mut tightest = (0u32, "", 0u32, 0u32);
        for (&kernel, &threads) in &launches {
            if let Some(u) = usage.get(kernel) {
                let need = block_registers(u.registers, threads);
                tightest = tightest.max((need, kernel, u.registers, threads));
            }
            match usage.get(kernel) {
                None => problems.push(format!("{arch}: ptxas reported nothing for {kernel}")),
                Some(u) if !registers_fit(u.registers, threads) => problems.push(format!(
                    "{arch}: {kernel} uses {} registers per thread; blocks of {threads} threads \
                     need more than the {REGISTERS_PER_BLOCK} a block may use",
                    u.registers
                )),
                Some(u) if u.spill_stores > 0 => eprintln!(
                    "note: {arch}: {kernel} spills {} bytes per thread",
                    u.spill_stores
                ),
                Some(_) => {}
            }
        }
        let (need, kernel, registers, threads) = tightest;
        eprintln!(
            "{arch}: {} kernels fit; the tightest is {kernel} ({registers} registers × {threads} \
             threads: {need} of {REGISTERS_PER_BLOCK})",
            launches.len()
        );
    }
    Ok((problems, launches.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_register_rule_matches_the_occupancy_calculator() {
        // 64 registers: 2048 per warp, 32 warps of 1024 threads take exactly 65,536.
        assert!(registers_fit(64, 1024));
        // 65 round up to 2304 per warp: 32 warps need 73,728.
        assert!(!registers_fit(65, 1024));
        assert!(registers_fit(255, 256));
        assert!(!registers_fit(255, 512));
        // A partial warp is allocated whole.
        assert!(registers_fit(128, 512));
        assert!(!registers_fit(128, 513));
    }

    #[test]
    fn reads_a_ptxas_report() {
        let log = "ptxas info    : 0 bytes gmem\n\
            ptxas info    : Compiling entry function 'attention_mma_f16' for 'sm_90'\n\
            ptxas info    : Function properties for attention_mma_f16\n\
            ptxas         .     0 bytes stack frame, 8 bytes spill stores, 8 bytes spill loads\n\
            ptxas info    : Used 179 registers, used 1 barriers, 23552 bytes smem\n\
            ptxas info    : Compiling entry function 'silu_f32' for 'sm_90'\n\
            ptxas info    : Used 10 registers, 380 bytes cmem[0]\n";
        let u = parse_report(log);
        assert_eq!(
            u["attention_mma_f16"],
            Usage {
                registers: 179,
                spill_stores: 8
            }
        );
        assert_eq!(u["silu_f32"].registers, 10);
        assert_eq!(u.len(), 2);
    }
}
