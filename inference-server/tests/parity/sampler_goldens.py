"""Writes the sampler goldens: schedules and full sampling runs on a fixed toy model.

Usage (see README.md):
    /work/.venv-ref/bin/python inference-server/tests/parity/sampler_goldens.py [OUT_FILE]

References:
  * A1111 names: k-diffusion 0.1.1.post1 from PyPI (`pip install --no-deps k-diffusion`, plus
    `scipy torchsde torchdiffeq`). Only `k_diffusion/sampling.py` and `external.py` are loaded
    (the package `__init__` pulls in training deps); `utils.append_dims` is re-stated here.
    The model wrapper is `external.DiscreteEpsDDPMDenoiser(quantize=False)` as A1111's
    `CompVisDenoiser`, on CompVis' `alphas_cumprod` (float64 betas, cast to float32).
    A1111's glue is re-stated from stable-diffusion-webui: schedule choice
    (`sd_samplers_kdiffusion.get_sigmas`, sigma_min/max = model.sigmas[0]/[-1], DPM2's
    discarded next-to-last sigma), `sd_schedulers.sgm_uniform`, and DDIM
    (`sd_samplers_timesteps_impl.ddim`, eta 0, timesteps `range(0, 1000, 1000 // steps) + 1`).
  * diffusers names: diffusers 0.42 schedulers with SD 1.5's scheduler config and the
    `timestep_spacing` named per case; pipeline loop `latents = noise * init_noise_sigma`,
    `scale_model_input`, model, `step`.

Toy eps model (both sides compute it): eps(x_in, t) = 0.1 * x_in + 0.2 * sin(t / 50) * bias.
Ancestral / SDE noise is injected: call k of the noise sampler returns anc_noise[k].
"""

import importlib
import math
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

import diffusers
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler


def load_k_diffusion():
    spec = importlib.util.find_spec("k_diffusion")
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = list(spec.submodule_search_locations)
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    pkg.utils = utils
    sys.modules["k_diffusion"] = pkg
    sys.modules["k_diffusion.utils"] = utils
    sampling = importlib.import_module("k_diffusion.sampling")
    external = importlib.import_module("k_diffusion.external")
    return sampling, external


K, EXT = load_k_diffusion()
SHAPE = [1, 4, 8, 8]
NOISE = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
BIAS = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
ANC = torch.randn([32] + SHAPE, generator=torch.Generator().manual_seed(2))
OUT = {}


def toy(x, t):
    t = torch.as_tensor(t, dtype=torch.float32).reshape(-1)[0]
    return 0.1 * x + 0.2 * torch.sin(t / 50) * BIAS


class Injected:
    def __init__(self):
        self.k = 0

    def __call__(self, *_):
        n = ANC[self.k]
        self.k += 1
        return n


# ---- A1111 / k-diffusion ----
betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
AC_LDM = torch.tensor(torch.cumprod(1 - betas, 0).numpy(), dtype=torch.float32)
DEN = EXT.DiscreteEpsDDPMDenoiser(toy, AC_LDM, quantize=False)


def sgm_uniform(n):
    start = DEN.sigma_to_t(DEN.sigma_max.clone())
    end = DEN.sigma_to_t(DEN.sigma_min.clone())
    sigs = [DEN.t_to_sigma(ts) for ts in torch.linspace(start, end, n + 1)[:-1]]
    sigs += [0.0]
    return torch.FloatTensor(sigs)


def a1111_sigmas(schedule, steps, discard=False):
    n = steps + (1 if discard else 0)
    lo, hi = DEN.sigmas[0].item(), DEN.sigmas[-1].item()
    s = {
        "uniform": lambda: DEN.get_sigmas(n),
        "karras": lambda: K.get_sigmas_karras(n, lo, hi),
        "exponential": lambda: K.get_sigmas_exponential(n, lo, hi),
        "sgm_uniform": lambda: sgm_uniform(n),
    }[schedule]()
    if discard:
        s = torch.cat([s[:-2], s[-1:]])
    return s


for sched in ["uniform", "karras", "exponential", "sgm_uniform"]:
    for steps in [4, 10]:
        OUT[f"a1111.sched.{sched}.{steps}"] = a1111_sigmas(sched, steps)
OUT["a1111.sched.dpm2_karras.4"] = a1111_sigmas("karras", 4, discard=True)
probe = torch.tensor([0.03, 0.0292, 0.1, 1.0, 3.3, 14.6, 14.6146, 20.0])
OUT["a1111.probe_sigmas"] = probe
OUT["a1111.sigma_to_t"] = DEN.sigma_to_t(probe)
probe_t = torch.tensor([0.0, 0.5, 1.0, 333.0, 666.25, 998.9, 999.0])
OUT["a1111.probe_t"] = probe_t
OUT["a1111.t_to_sigma"] = DEN.t_to_sigma(probe_t)

RUNS = [
    ("euler", K.sample_euler, "uniform", False),
    ("euler_a", K.sample_euler_ancestral, "uniform", True),
    ("heun", K.sample_heun, "uniform", False),
    ("dpmpp_2m", K.sample_dpmpp_2m, "karras", False),
    ("dpmpp_2m_uniform", K.sample_dpmpp_2m, "uniform", False),
    ("dpmpp_sde", K.sample_dpmpp_sde, "karras", True),
    ("lms", K.sample_lms, "uniform", False),
    ("dpm2", K.sample_dpm_2, "karras", False),
    ("dpm2_a", K.sample_dpm_2_ancestral, "karras", True),
    ("dpmpp_2s_a", K.sample_dpmpp_2s_ancestral, "karras", True),
    ("dpmpp_2m_sde", K.sample_dpmpp_2m_sde, "exponential", True),
]
for name, fn, sched, noisy in RUNS:
    for steps in [4, 7]:
        sigmas = a1111_sigmas(sched, steps, discard=name in ("dpm2", "dpm2_a"))
        x = NOISE * sigmas[0]
        kw = {"noise_sampler": Injected()} if noisy else {}
        out = fn(DEN, x, sigmas, disable=True, **kw)
        OUT[f"a1111.run.{name}.{steps}"] = out


def a1111_ddim(steps):
    ts = torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)
    alphas = AC_LDM[ts]
    alphas_prev = AC_LDM[torch.nn.functional.pad(ts[:-1], pad=(1, 0))].to(torch.float64)
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    x = NOISE.clone()
    for i in range(len(ts) - 1):
        index = len(ts) - 1 - i
        e_t = toy(x, ts[index].item())
        a_t = alphas[index].item()
        a_prev = alphas_prev[index].item()
        pred_x0 = (x - sqrt_one_minus_alphas[index].item() * e_t) / math.sqrt(a_t)
        dir_xt = math.sqrt(1.0 - a_prev) * e_t
        x = math.sqrt(a_prev) * pred_x0 + dir_xt
    return ts, x


for steps in [4, 7]:
    ts, x = a1111_ddim(steps)
    OUT[f"a1111.ddim_timesteps.{steps}"] = ts.float()
    OUT[f"a1111.run.ddim.{steps}"] = x

# ---- diffusers ----
SD15 = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    steps_offset=1, set_alpha_to_one=False, clip_sample=False, prediction_type="epsilon",
)
CLASSES = {
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "ddim": DDIMScheduler,
    "dpm": DPMSolverMultistepScheduler,
}
_queue = []


def fake_randn(shape, generator=None, device=None, dtype=None, layout=None):
    return _queue.pop(0).reshape(shape)


import diffusers.schedulers.scheduling_euler_ancestral_discrete as ea_mod  # noqa: E402

ea_mod.randn_tensor = fake_randn

for cls_name, cls in CLASSES.items():
    for spacing in ["leading", "linspace", "trailing"]:
        for karras in [False, True]:
            if karras and cls_name in ("ddim", "euler_a"):
                continue
            for steps in [4, 7]:
                kw = {"use_karras_sigmas": True} if karras else {}
                sch = cls.from_config({**SD15, "timestep_spacing": spacing, **kw})
                sch.set_timesteps(steps)
                key = f"diffusers.{cls_name}.{spacing}{'.karras' if karras else ''}.{steps}"
                OUT[key + ".timesteps"] = sch.timesteps.float()
                if hasattr(sch, "sigmas") and cls_name != "ddim":
                    OUT[key + ".sigmas"] = sch.sigmas.float()
                _queue[:] = list(ANC)
                x = NOISE * sch.init_noise_sigma
                for t in sch.timesteps:
                    inp = sch.scale_model_input(x, t)
                    x = sch.step(toy(inp, t), t, x).prev_sample
                OUT[key + ".final"] = x
                OUT[key + ".init_noise_sigma"] = torch.tensor([float(sch.init_noise_sigma)])

OUT["noise"] = NOISE
OUT["bias"] = BIAS
OUT["anc_noise"] = ANC
OUT = {k: v.float().contiguous() for k, v in OUT.items()}
default = Path(__file__).resolve().parent.parent / "goldens" / "samplers.safetensors"
out = Path(sys.argv[1]) if len(sys.argv) > 1 else default
save_file(OUT, out, metadata={"diffusers": diffusers.__version__, "k_diffusion": "0.1.1.post1"})
print(f"wrote {len(OUT)} tensors to {out}")
