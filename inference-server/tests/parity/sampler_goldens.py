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
    discarded next-to-last sigma), `sd_schedulers.sgm_uniform`, LCM
    (`sd_samplers_lcm.LCMCompVisDenoiser` and `sample_lcm`), and DDIM
    (`sd_samplers_timesteps_impl.ddim`, eta 0, timesteps `range(0, 1000, 1000 // steps) + 1`).
  * diffusers names: diffusers 0.42 schedulers with SD 1.5's scheduler config and the
    `timestep_spacing` named per case; pipeline loop `latents = noise * init_noise_sigma`,
    `scale_model_input`, model, `step`.

Toy eps model (both sides compute it): eps(x_in, t) = 0.1 * x_in + 0.2 * sin(t / 50) * bias.
Ancestral / SDE noise is injected: call k of the noise sampler returns anc_noise[k].
"""

import math
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

import diffusers
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kdiff import load_k_diffusion  # noqa: E402

K, EXT = load_k_diffusion()
SHAPE = [1, 4, 8, 8]
NOISE = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
BIAS = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
ANC = torch.randn([32] + SHAPE, generator=torch.Generator().manual_seed(2))
OUT = {}
SD15 = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    steps_offset=1, set_alpha_to_one=False, clip_sample=False, prediction_type="epsilon",
    skip_prk_steps=True,
)


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


def a1111_ddim(steps, v=False):
    ts = torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)
    alphas = AC_LDM[ts]
    alphas_prev = AC_LDM[torch.nn.functional.pad(ts[:-1], pad=(1, 0))].to(torch.float64)
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    x = NOISE.clone()
    for i in range(len(ts) - 1):
        index = len(ts) - 1 - i
        e_t = toy(x, ts[index].item())
        if v:  # CompVisTimestepsVDenoiser.predict_eps_from_z_and_v
            t_int = int(ts[index].item())
            e_t = AC_LDM[t_int].sqrt() * e_t + (1 - AC_LDM[t_int]).sqrt() * x
        a_t = alphas[index].item()
        a_prev = alphas_prev[index].item()
        pred_x0 = (x - sqrt_one_minus_alphas[index].item() * e_t) / math.sqrt(a_t)
        dir_xt = math.sqrt(1.0 - a_prev) * e_t
        x = math.sqrt(a_prev) * pred_x0 + dir_xt
    return ts, x


class LCMDenoiser(EXT.DiscreteEpsDDPMDenoiser):
    """A1111 modules/sd_samplers_lcm.py LCMCompVisDenoiser, re-stated on the toy model."""

    def __init__(self, alphas_cumprod):
        timesteps, original = 1000, 50
        self.skip_steps = timesteps // original
        valid = torch.zeros(original, dtype=torch.float32)
        for x in range(original):
            valid[original - 1 - x] = alphas_cumprod[timesteps - 1 - x * self.skip_steps]
        super().__init__(toy, valid, quantize=None)

    def get_sigmas(self, n=None):
        start = self.sigma_to_t(self.sigma_max)
        end = self.sigma_to_t(self.sigma_min)
        t = torch.linspace(start, end, n)
        return K.append_zero(self.t_to_sigma(t))

    def sigma_to_t(self, sigma, quantize=None):
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape) * self.skip_steps + (self.skip_steps - 1)

    def t_to_sigma(self, timestep):
        t = torch.clamp(((timestep - (self.skip_steps - 1)) / self.skip_steps).float(), min=0, max=(len(self.sigmas) - 1))
        return super().t_to_sigma(t)

    def get_scaled_out(self, sigma, output, input):
        sigma_data = 0.5
        scaled_timestep = self.sigma_to_t(sigma)[:, None, None, None] * 10.0
        c_skip = sigma_data**2 / (scaled_timestep**2 + sigma_data**2)
        c_out = scaled_timestep / (scaled_timestep**2 + sigma_data**2) ** 0.5
        return c_out * output + c_skip * input

    def forward(self, input, sigma, **kwargs):
        c_out, c_in = [x[:, None, None, None] for x in self.get_scalings(sigma)]
        eps = self.get_eps(input * c_in, self.sigma_to_t(sigma), **kwargs)
        return self.get_scaled_out(sigma, input + eps * c_out, input)


def sample_lcm(model, x, sigmas, noise_sampler):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        x = denoised
        if sigmas[i + 1] > 0:
            x += sigmas[i + 1] * noise_sampler(sigmas[i], sigmas[i + 1])
    return x


LCM = LCMDenoiser(AC_LDM)
for steps in [4, 7]:
    sig = LCM.get_sigmas(steps)
    OUT[f"a1111.sched.lcm.{steps}"] = sig
    OUT[f"a1111.run.lcm.{steps}"] = sample_lcm(LCM, NOISE * sig[0], sig, Injected())

for steps in [4, 7]:
    ts, x = a1111_ddim(steps)
    OUT[f"a1111.ddim_timesteps.{steps}"] = ts.float()
    OUT[f"a1111.run.ddim.{steps}"] = x

# A1111 UniPC (sd_samplers_timesteps_impl.unipc; options bh1, order 3, time_uniform, lower order
# final) on its continuous VP grid, with the solver run by diffusers' UniPCMultistepScheduler
# (the same UniPC bh1 predictor-corrector, from an independent implementation) whose sigmas and
# timesteps are replaced by that grid: sigma(t) = sigma_t / alpha_t with log alpha_t piecewise
# linear at t_i = (i + 1) / N, model time (t - 1/N) * 1000, t from 1 to 1/N in n + 1 points,
# n = len(A1111's DDIM timesteps).
def a1111_unipc(steps):
    n = len(range(0, 1000, 1000 // steps))
    la = 0.5 * torch.log(AC_LDM.double())
    ts = torch.linspace(1.0, 1.0 / 1000, n + 1, dtype=torch.float64)
    p = ts * 1000 - 1
    i = p.floor().clamp(0, 998).long()
    lma = la[i] + (p - i) * (la[i + 1] - la[i])
    sig = torch.sqrt(1 - torch.exp(2 * lma)) / torch.exp(lma)
    sch = UniPCMultistepScheduler.from_config(
        {**SD15, "solver_order": 3, "solver_type": "bh1", "predict_x0": True, "lower_order_final": True}
    )
    sch.set_timesteps(n)
    sch.sigmas = sig.float()
    sch.timesteps = ((ts[:-1] - 1.0 / 1000) * 1000).float()
    x = NOISE.clone()
    for t in sch.timesteps:
        x = sch.step(toy(x, t), t, x).prev_sample
    return ((ts - 1.0 / 1000) * 1000).float(), x


for steps in [4, 7]:
    t_in, x = a1111_unipc(steps)
    OUT[f"a1111.unipc_t.{steps}"] = t_in
    OUT[f"a1111.run.unipc.{steps}"] = x

# v-prediction: A1111 wraps v models in DiscreteVDDPMDenoiser (k-diffusion samplers) and
# CompVisTimestepsVDenoiser (DDIM); the toy output is read as v.
VDEN = EXT.DiscreteVDDPMDenoiser(toy, AC_LDM, quantize=False)
for name, fn, sigmas in [
    ("euler", K.sample_euler, VDEN.get_sigmas(4)),
    ("dpmpp_2m", K.sample_dpmpp_2m, K.get_sigmas_karras(4, VDEN.sigmas[0].item(), VDEN.sigmas[-1].item())),
]:
    OUT[f"v.a1111.{name}.4"] = fn(VDEN, NOISE * sigmas[0], sigmas, disable=True)
OUT["v.a1111.ddim.4"] = a1111_ddim(4, v=True)[1]

# ---- diffusers ----
CLASSES = {
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "ddim": DDIMScheduler,
    "dpm": DPMSolverMultistepScheduler,
    "lms": LMSDiscreteScheduler,
    "pndm": PNDMScheduler,
}
_queue = []


def fake_randn(shape, generator=None, device=None, dtype=None, layout=None):
    return _queue.pop(0).reshape(shape)


import diffusers.schedulers.scheduling_euler_ancestral_discrete as ea_mod  # noqa: E402

ea_mod.randn_tensor = fake_randn

for cls_name, cls in CLASSES.items():
    for spacing in ["leading", "linspace", "trailing"]:
        for karras in [False, True]:
            if karras and cls_name in ("ddim", "euler_a", "pndm"):
                continue
            for steps in [4, 7]:
                kw = {"use_karras_sigmas": True} if karras else {}
                sch = cls.from_config({**SD15, "timestep_spacing": spacing, **kw})
                sch.set_timesteps(steps)
                key = f"diffusers.{cls_name}.{spacing}{'.karras' if karras else ''}.{steps}"
                OUT[key + ".timesteps"] = sch.timesteps.float()
                if cls_name not in ("ddim", "pndm"):
                    OUT[key + ".sigmas"] = sch.sigmas.float()
                _queue[:] = list(ANC)
                x = NOISE * sch.init_noise_sigma
                for t in sch.timesteps:
                    inp = sch.scale_model_input(x, t)
                    x = sch.step(toy(inp, t), t, x).prev_sample
                OUT[key + ".final"] = x
                OUT[key + ".init_noise_sigma"] = torch.tensor([float(sch.init_noise_sigma)])

for cls_name, cls in CLASSES.items():
    sch = cls.from_config({**SD15, "prediction_type": "v_prediction", "timestep_spacing": "leading"})
    sch.set_timesteps(4)
    _queue[:] = list(ANC)
    x = NOISE * sch.init_noise_sigma
    for t in sch.timesteps:
        x = sch.step(toy(sch.scale_model_input(x, t), t), t, x).prev_sample
    OUT[f"v.diffusers.{cls_name}.4"] = x

OUT["noise"] = NOISE
OUT["bias"] = BIAS
OUT["anc_noise"] = ANC
OUT = {k: v.float().contiguous() for k, v in OUT.items()}
default = Path(__file__).resolve().parent.parent / "goldens" / "samplers.safetensors"
out = Path(sys.argv[1]) if len(sys.argv) > 1 else default
save_file(OUT, out, metadata={"diffusers": diffusers.__version__, "k_diffusion": "0.1.1.post1"})
print(f"wrote {len(OUT)} tensors to {out}")
