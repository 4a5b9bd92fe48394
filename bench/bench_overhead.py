"""What driving MESS through the fastai `Learner` costs: time per stage-1 training step through `learn.fit` (every
callback: exit sampling, recorder, the optimiser's hyper-parameter scheduling) against a plain PyTorch loop computing
the same loss on the same batches with the same optimiser, one exit sampled per step in both (independent draws).

The benchmark network's setting (ResNet-18, output stride 8, 120x160, batch size 8, CamVid). Two optimisers, each used
by both sides, so that only the framework differs:
- fastai's own `Adam` (what `mess_learner` uses), called directly in the plain loop;
- PyTorch's `torch.optim.AdamW`, wrapped by fastai's `OptimWrapper` in the Learner.
Rounds are interleaved (the machine's speed drifts); the ratio is of the medians over rounds of each round's median
step. Writes results/overhead.json and overhead.txt.

    python bench/bench_overhead.py        # about 10 min here on 2 otherwise idle cores
"""
import json, time, random, statistics, datetime, platform
from functools import partial
from pathlib import Path
import torch
from fastcore.script import call_parse
from mess_fast.core import plain
from mess_fast.train import mess_learner
from mess_fast.losses import MultiExitLoss
from fastai.callback.core import Callback
from fastai.data.core import DataLoaders
from fastai.optimizer import Adam, OptimWrapper
from common import RESULTS, camvid_loaders

class StepTimer(Callback):
    "Wall time of every training step, from `before_batch` (first callback) to `after_batch` (last)"
    order = -100
    def before_fit(self): self.times = []
    def before_batch(self):
        if self.training: self.t0 = time.perf_counter()

class _Last(Callback):
    order = 100
    def __init__(self, timer): self.timer = timer
    def after_batch(self):
        if self.training: self.timer.times.append(time.perf_counter() - self.timer.t0)

def measure(dls, batches, opt_name, rounds, output_stride, lr=1e-3):
    opt_func = Adam if opt_name == 'fastai Adam' else partial(OptimWrapper, opt=torch.optim.AdamW)
    learn = mess_learner(dls, seed=0, output_stride=output_stride, opt_func=opt_func)
    net, timer = learn.model, StepTimer(); last = _Last(timer); learn.add_cb(timer)
    learn.dls = DataLoaders(batches, batches[:1])
    loss_f, keys = MultiExitLoss(dls.void_code), list(net.heads)
    res = dict(learner=[], plain=[])
    for r in range(rounds):
        timer.times = []
        with learn.no_bar(), learn.no_logging(): learn.fit(1, lr, cbs=[last])
        res['learner'].append(statistics.median(timer.times))
        opt = Adam(list(net.parameters()), lr=lr) if opt_name == 'fastai Adam' else torch.optim.AdamW(net.parameters(), lr=lr)
        rng = random.Random(r); net.train(); ts = []
        for x, y in batches:
            t0 = time.perf_counter()
            net.active = [rng.choice(keys)]
            loss = loss_f(net(x), y); loss.backward(); opt.step(); opt.zero_grad()
            ts.append(time.perf_counter() - t0)
        net.active = None
        res['plain'].append(statistics.median(ts))
    lm, pm = statistics.median(res['learner']), statistics.median(res['plain'])
    return dict(learner_step_s=lm, plain_step_s=pm, ratio=lm / pm, per_round=res)

@call_parse
def main(steps:int=20,          # Steps per round
         rounds:int=5,          # Interleaved rounds
         output_stride:int=8,   # As the benchmark network
         threads:int=2,         # torch threads
         out:str=str(RESULTS),  # Results folder
         overwrite:bool=False,  # Replace an existing overhead.json
        ):
    "Measure the fastai Learner's overhead per stage-1 step; write overhead.json and overhead.txt"
    torch.set_num_threads(threads)
    out = Path(out)
    if (out/'overhead.json').exists() and not overwrite: raise SystemExit(f"{out.name}/overhead.json exists: pass --overwrite")
    dls, _, _ = camvid_loaders()
    batches = []
    for b in dls.train:
        batches.append(tuple(plain(t).clone() for t in b))
        if len(batches) == steps: break
    res = dict(date=datetime.datetime.now().isoformat(timespec='seconds'), torch=torch.__version__, python=platform.python_version(),
               threads=threads, steps=steps, rounds=rounds, output_stride=output_stride, results={})
    lines = []
    for name in ('fastai Adam', 'torch AdamW'):
        r = res['results'][name] = measure(dls, batches, name, rounds, output_stride)
        lines.append(f"{name}: Learner {r['learner_step_s'] * 1e3:.0f} ms/step, plain loop {r['plain_step_s'] * 1e3:.0f} ms/step, "
                     f"ratio {r['ratio']:.3f} (medians of {rounds} interleaved rounds of {steps} steps)")
        print(lines[-1], flush=True)
    (out/'overhead.json').write_text(json.dumps(res, indent=1))
    (out/'overhead.txt').write_text('\n'.join(lines) + '\n')
