//! Sampler and schedule names as clients send them, resolved to an implementation.
//!
//! Three vocabularies are accepted and each keeps the semantics of its home:
//! - A1111 sampler names (`"Euler a"`, `"DPM++ 2M"`, ...), optionally with a schedule suffix
//!   in the legacy form (`"DPM++ 2M Karras"`), plus A1111 schedule-type names (`"Automatic"`,
//!   `"Uniform"`, `"Karras"`, `"Exponential"`, `"SGM Uniform"`). These run k-diffusion's
//!   samplers on continuous sigmas ([`super::schedule`], [`super::k_samplers`]).
//! - diffusers scheduler class names (`"EulerDiscreteScheduler"`, ...): these run diffusers'
//!   step functions on diffusers' timesteps, honouring the model's `scheduler_config.json`
//!   ([`super::diffusers`], [`super::diffusers_steps`]).
//! - Leonardo scheduler names (`"EULER_DISCRETE"`, ...), mapped to the diffusers classes.
//!   `"DDIM"` is spelled the same in A1111 and Leonardo; it resolves to A1111's DDIM.
//!
//! An unknown name is [`SamplerError::UnknownSampler`] (gRPC `INVALID_ARGUMENT`), whose
//! message lists every accepted name.

use super::SamplerError;

/// A k-diffusion / A1111 sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KSampler {
    /// `"Euler"`: `sample_euler`.
    Euler,
    /// `"Euler a"`: `sample_euler_ancestral`.
    EulerAncestral,
    /// `"LMS"`: `sample_lms`.
    Lms,
    /// `"Heun"`: `sample_heun`.
    Heun,
    /// `"DPM2"`: `sample_dpm_2` (discards the next-to-last sigma).
    Dpm2,
    /// `"DPM2 a"`: `sample_dpm_2_ancestral` (discards the next-to-last sigma).
    Dpm2Ancestral,
    /// `"DPM++ 2S a"`: `sample_dpmpp_2s_ancestral`.
    DpmPp2SAncestral,
    /// `"DPM++ 2M"`: `sample_dpmpp_2m`.
    DpmPp2M,
    /// `"DPM++ SDE"`: `sample_dpmpp_sde`.
    DpmPpSde,
    /// `"DPM++ 2M SDE"`: `sample_dpmpp_2m_sde`.
    DpmPp2MSde,
    /// `"DDIM"`: A1111's timestep DDIM (eta 0).
    Ddim,
    /// `"UniPC"`: A1111's UniPC.
    UniPc,
    /// `"LCM"`: A1111's LCM sampler.
    Lcm,
}

impl KSampler {
    /// Every A1111 sampler with its canonical name.
    pub const ALL: [(KSampler, &'static str); 13] = [
        (KSampler::EulerAncestral, "Euler a"),
        (KSampler::Euler, "Euler"),
        (KSampler::Lms, "LMS"),
        (KSampler::Heun, "Heun"),
        (KSampler::Dpm2, "DPM2"),
        (KSampler::Dpm2Ancestral, "DPM2 a"),
        (KSampler::DpmPp2SAncestral, "DPM++ 2S a"),
        (KSampler::DpmPp2M, "DPM++ 2M"),
        (KSampler::DpmPpSde, "DPM++ SDE"),
        (KSampler::DpmPp2MSde, "DPM++ 2M SDE"),
        (KSampler::Ddim, "DDIM"),
        (KSampler::UniPc, "UniPC"),
        (KSampler::Lcm, "LCM"),
    ];

    /// The A1111 name.
    pub fn name(self) -> &'static str {
        KSampler::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("", |(_, n)| n)
    }

    /// The schedule A1111's `"Automatic"` means for this sampler (its `scheduler` option).
    pub fn default_schedule(self) -> Schedule {
        match self {
            KSampler::DpmPp2M
            | KSampler::DpmPpSde
            | KSampler::DpmPp2SAncestral
            | KSampler::Dpm2
            | KSampler::Dpm2Ancestral => Schedule::Karras,
            KSampler::DpmPp2MSde => Schedule::Exponential,
            _ => Schedule::Uniform,
        }
    }

    /// Whether A1111 samples one extra step and drops the next-to-last sigma.
    pub fn discards_next_to_last_sigma(self) -> bool {
        matches!(self, KSampler::Dpm2 | KSampler::Dpm2Ancestral)
    }

    /// Whether the sampler has its own timestep / sigma grid (DDIM, UniPC, LCM). Schedule
    /// suffixes are refused for these (A1111 ignores them for DDIM and UniPC; LCM's non-default
    /// schedules are not supported here).
    pub fn is_timestep_sampler(self) -> bool {
        matches!(self, KSampler::Ddim | KSampler::UniPc | KSampler::Lcm)
    }
}

/// An A1111 schedule type (sigma schedule of the k-diffusion samplers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Schedule {
    /// The sampler's default ([`KSampler::default_schedule`]).
    Automatic,
    /// `get_sigmas(n)`: uniform in discrete timestep, log-sigma interpolated.
    Uniform,
    /// Karras et al. (2022), rho 7, between the model's smallest and largest sigma.
    Karras,
    /// Uniform in log sigma.
    Exponential,
    /// Uniform in timestep from `sigma_to_t(sigma_max)` to `sigma_to_t(sigma_min)`.
    SgmUniform,
}

impl Schedule {
    /// Every schedule with its A1111 label and other accepted spellings.
    pub const ALL: [(Schedule, &'static [&'static str]); 5] = [
        (Schedule::Automatic, &["Automatic", "automatic"]),
        (Schedule::Uniform, &["Uniform", "uniform"]),
        (Schedule::Karras, &["Karras", "karras"]),
        (Schedule::Exponential, &["Exponential", "exponential"]),
        (
            Schedule::SgmUniform,
            &["SGM Uniform", "sgm_uniform", "SGMUniform"],
        ),
    ];

    /// Parses a schedule name; `None` or `""` is `Automatic`.
    pub fn parse(name: Option<&str>) -> Result<Schedule, SamplerError> {
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return Ok(Schedule::Automatic);
        };
        Schedule::ALL
            .iter()
            .find(|(_, names)| names.contains(&name))
            .map(|(s, _)| *s)
            .ok_or_else(|| SamplerError::UnknownSchedule {
                name: name.to_string(),
                accepted: Schedule::ALL
                    .iter()
                    .map(|(_, n)| n[0].to_string())
                    .collect(),
            })
    }

    /// This schedule, with `Automatic` replaced by `sampler`'s default.
    pub fn resolve(self, sampler: KSampler) -> Schedule {
        if self == Schedule::Automatic {
            sampler.default_schedule()
        } else {
            self
        }
    }
}

/// A diffusers scheduler class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiffusersScheduler {
    /// `EulerDiscreteScheduler`.
    EulerDiscrete,
    /// `EulerAncestralDiscreteScheduler`.
    EulerAncestralDiscrete,
    /// `DDIMScheduler` (eta 0).
    Ddim,
    /// `DPMSolverMultistepScheduler` (order 2, dpmsolver++, midpoint).
    DpmSolverMultistep,
    /// `LMSDiscreteScheduler`.
    LmsDiscrete,
    /// `PNDMScheduler` (with `skip_prk_steps`).
    Pndm,
}

impl DiffusersScheduler {
    /// Every class with its diffusers class name.
    pub const ALL: [(DiffusersScheduler, &'static str); 6] = [
        (DiffusersScheduler::EulerDiscrete, "EulerDiscreteScheduler"),
        (
            DiffusersScheduler::EulerAncestralDiscrete,
            "EulerAncestralDiscreteScheduler",
        ),
        (DiffusersScheduler::Ddim, "DDIMScheduler"),
        (
            DiffusersScheduler::DpmSolverMultistep,
            "DPMSolverMultistepScheduler",
        ),
        (DiffusersScheduler::LmsDiscrete, "LMSDiscreteScheduler"),
        (DiffusersScheduler::Pndm, "PNDMScheduler"),
    ];

    /// The diffusers class name (`EulerDiscreteScheduler`, ...).
    pub fn class_name(self) -> &'static str {
        DiffusersScheduler::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("", |(_, n)| n)
    }

    /// Leonardo's scheduler names (`DDIM` is taken by A1111's and not listed here).
    pub const LEONARDO: [(DiffusersScheduler, &'static str); 5] = [
        (DiffusersScheduler::EulerDiscrete, "EULER_DISCRETE"),
        (
            DiffusersScheduler::EulerAncestralDiscrete,
            "EULER_ANCESTRAL_DISCRETE",
        ),
        (DiffusersScheduler::DpmSolverMultistep, "DPM_SOLVER"),
        (DiffusersScheduler::LmsDiscrete, "KLMS"),
        (DiffusersScheduler::Pndm, "PNDM"),
    ];
}

/// What a request's sampler (and schedule) name resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// A1111 semantics: a k-diffusion sampler on an A1111 sigma schedule (never `Automatic`).
    A1111 {
        /// The sampler.
        sampler: KSampler,
        /// The schedule, `Automatic` already resolved.
        schedule: Schedule,
    },
    /// diffusers semantics. `karras` is set by a `" Karras"` suffix or the `Karras` schedule
    /// (diffusers' `use_karras_sigmas`), where the class supports it.
    Diffusers {
        /// The scheduler class.
        scheduler: DiffusersScheduler,
        /// `use_karras_sigmas`.
        karras: bool,
    },
}

/// Every accepted sampler name, in the order error messages list them.
pub fn accepted_sampler_names() -> Vec<String> {
    let mut out: Vec<String> = KSampler::ALL.iter().map(|(_, n)| n.to_string()).collect();
    for (s, n) in KSampler::ALL {
        if s.is_timestep_sampler() {
            continue;
        }
        for sched in ["Karras", "Exponential", "SGM Uniform", "Uniform"] {
            out.push(format!("{n} {sched}"));
        }
    }
    out.extend(DiffusersScheduler::ALL.iter().map(|(_, n)| n.to_string()));
    out.extend(
        DiffusersScheduler::LEONARDO
            .iter()
            .map(|(_, n)| n.to_string()),
    );
    out
}

/// Resolves a sampler name and an optional schedule name (`None`/`""` = `Automatic`).
///
/// A legacy suffix (`"DPM++ 2M Karras"`) overrides the schedule argument, as in A1111.
/// For diffusers/Leonardo names only `Automatic` and `Karras` are meaningful (Karras sets
/// `use_karras_sigmas` on Euler, Euler ancestral, DPM-Solver and LMS); others are refused.
pub fn resolve(sampler: &str, schedule: Option<&str>) -> Result<Resolved, SamplerError> {
    let schedule_arg = Schedule::parse(schedule)?;
    let unknown = || SamplerError::UnknownSampler {
        name: sampler.to_string(),
        accepted: accepted_sampler_names(),
    };
    let diffusers = DiffusersScheduler::ALL
        .iter()
        .chain(DiffusersScheduler::LEONARDO.iter());
    if let Some((d, _)) = diffusers.clone().find(|(_, n)| *n == sampler) {
        let karras = match schedule_arg {
            Schedule::Automatic => false,
            Schedule::Karras
                if !matches!(d, DiffusersScheduler::Ddim | DiffusersScheduler::Pndm) =>
            {
                true
            }
            other => {
                return Err(SamplerError::UnsupportedSchedule {
                    sampler: sampler.to_string(),
                    schedule: format!("{other:?}"),
                });
            }
        };
        return Ok(Resolved::Diffusers {
            scheduler: *d,
            karras,
        });
    }
    // Exact A1111 name, then a legacy "<name> <schedule>" form.
    let (base, sched) = match KSampler::ALL.iter().find(|(_, n)| *n == sampler) {
        Some((s, _)) => (*s, schedule_arg),
        None => Schedule::ALL
            .iter()
            .skip(1)
            .flat_map(|(sch, names)| names.iter().map(move |n| (*sch, *n)))
            .find_map(|(sch, suffix)| {
                let prefix = sampler.strip_suffix(suffix)?.strip_suffix(' ')?;
                KSampler::ALL
                    .iter()
                    .find(|(_, n)| *n == prefix)
                    .map(|(s, _)| (*s, sch))
            })
            .ok_or_else(unknown)?,
    };
    if base.is_timestep_sampler() && sched != Schedule::Automatic {
        return Err(SamplerError::UnsupportedSchedule {
            sampler: sampler.to_string(),
            schedule: format!("{sched:?}"),
        });
    }
    Ok(Resolved::A1111 {
        sampler: base,
        schedule: sched.resolve(base),
    })
}
