"""Two-stage MESS training benchmark on the shared CamVid (train split for training, val for metrics).

ResNet-18 from scratch, output stride 16, at 120x160 (a third of CamVid's 360x480 per side: the size at which one epoch of 367 frames costs ~15 s on this 2-core CPU, so that three stage-1 runs fit the budget):

1. MESS stage 1 with one exit sampled per iteration (the paper's), then stage 2 (frozen backbone, a grid of heads at
   every candidate, PFD): per-exit val mIoU, time per epoch of each stage;
2. the same stage 1 with every exit trained at every iteration ('all', losses summed): final-exit mIoU;
3. a plain single-exit network (same backbone and DeepLab head, no exits) with the same epochs and schedule;
4. overhead of the fastai path: time per stage-1 training step through the Learner vs a plain PyTorch loop computing
   the same loss on the same batches, one exit sampled uniformly per step in both (independent draws), interleaved rounds, ratio of medians in one run.

Prints tables and writes bench/results/train.json and the trained network bench/results/mess_r18.pth (refuses to
overwrite it unless --overwrite).   Run:  .venv/bin/python bench/bench_train.py   (57 min here, 2 cores)
"""
import json, time, datetime, os, sys, random, platform, statistics
from pathlib import Path
import numpy as np, pandas as pd, torch
from fastcore.script import call_parse
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))   # run from a checkout without installing
from fastai.callback.core import Callback
from fastai.data.core import DataLoaders
from fastai.torch_core import set_seed
from mess_fast.data import mess_dls
from mess_fast.model import FINAL
from mess_fast.train import mess_learner, MultiExitLoss
from mess_fast.predict import _plain


class StepTimer(Callback):
    "Wall time of every training step, from `before_batch` (first callback) to `after_batch` (last): all fastai overhead included, data loading excluded"
    order = -100
    def before_fit(self): self.times = []
    def before_batch(self):
        if self.training: self.t0 = time.perf_counter()


class _Last(Callback):
    order = 100
    def __init__(self, timer): self.timer = timer
    def after_batch(self):
        if self.training: self.timer.times.append(time.perf_counter() - self.timer.t0)


def overhead(dls, n_steps, rounds, lr=1e-3):
    "Median time per stage-1 step: fastai Learner vs plain PyTorch loop, same batches, one uniformly sampled exit per step in both"
    batches = []
    for b in dls.train:
        batches.append(tuple(_plain(t).clone() for t in b))
        if len(batches) == n_steps: break
    learn = mess_learner(dls, seed=0)
    net = learn.model
    timer = StepTimer(); last = _Last(timer); learn.add_cb(timer)
    learn.dls = DataLoaders(batches, batches[:1])
    loss_f = MultiExitLoss(dls.void_code)
    keys = list(net.heads)
    res = dict(learner=[], plain=[])
    for r in range(rounds):
        # fastai: fit one epoch over the fixed batches (validation on one batch excluded from the step times)
        timer.times = []
        learn.fit(1, lr, cbs=[last])
        res['learner'].append(statistics.median(timer.times))
        # plain PyTorch: same network, same loss, torch.optim.Adam, exits sampled the same way
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        rng = random.Random(r); net.train(); ts = []
        for x, y in batches:
            t0 = time.perf_counter()
            net.active = [rng.choice(keys)]
            loss = loss_f(net(x), y); loss.backward(); opt.step(); opt.zero_grad()
            ts.append(time.perf_counter() - t0)
        net.active = None
        res['plain'].append(statistics.median(ts))
    lm, pm = statistics.median(res['learner']), statistics.median(res['plain'])
    return dict(steps=n_steps, rounds=rounds, learner_step_s=lm, plain_step_s=pm, ratio=lm / pm, per_round=res)


class EpochTimer(Callback):
    order = 99
    def before_fit(self): self.times = []
    def before_epoch(self): self.t0 = time.perf_counter()
    def after_epoch(self): self.times.append(time.perf_counter() - self.t0)


def stage1(dls, mode, epochs, lr, positions=None):
    set_seed(0, reproducible=True)
    learn = mess_learner(dls, stage1=mode, seed=0, positions=positions)
    et = EpochTimer()
    learn.fit_stage1(epochs, lr, cbs=[et])
    tab = learn.exit_table()
    return learn, tab, et.times


@call_parse
def main(data:str=os.environ.get('MESS_FAST_CAMVID', str(HERE.parent.parent/'shared'/'data'/'camvid')), # CamVid (SegNet layout)
         height:int=120,     # Input height
         width:int=160,      # Input width
         bs:int=8,           # Batch size
         epochs1:int=30,     # Stage-1 epochs (and the plain network's)
         epochs2:int=8,      # Stage-2 epochs
         lr1:float=3e-3,     # Stage-1 maximum learning rate
         lr2:float=3e-3,     # Stage-2 maximum learning rate
         grid:str='fcn-b0,fcn-crm-b1-rdi,aspp-crm-b0,aspp-crm-b1-rdi', # Stage-2 heads
         overhead_steps:int=20, # Steps per round of the overhead measurement
         overhead_rounds:int=5, # Interleaved rounds of the overhead measurement
         threads:int=2,      # torch threads
         skip_all:bool=False,   # Skip the 'all exits' stage-1 variant
         skip_plain:bool=False, # Skip the plain single-exit network
         out:str=str(HERE/'results'), # Results folder
         overwrite:bool=False,  # Replace an existing mess_r18.pth
        ):
    "Run the benchmark; print tables; write train.json and mess_r18.pth"
    torch.set_num_threads(threads)
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    ckpt = out/'mess_r18.pth'
    if ckpt.exists() and not overwrite: raise SystemExit(f"{ckpt} exists: pass --overwrite to replace it")
    size = (height, width)
    dls = mess_dls(data, size=size, bs=bs)
    print(f"{data}: {len(dls.train_ds)} train / {len(dls.valid_ds)} val frames at {size}, bs={bs}, threads={threads}")
    res = dict(date=datetime.datetime.now().isoformat(timespec='seconds'), data=data, size=list(size), bs=bs,
               threads=threads, epochs1=epochs1, epochs2=epochs2, lr1=lr1, lr2=lr2, grid=grid.split(','),
               torch=torch.__version__, python=platform.python_version(), arch='resnet18', output_stride=16, pretrained=False)

    print("\n== overhead: fastai Learner vs plain PyTorch loop, stage-1 steps ==")
    res['overhead'] = overhead(dls, overhead_steps, overhead_rounds)
    o = res['overhead']; print(f"learner {o['learner_step_s']*1e3:.0f} ms/step, plain {o['plain_step_s']*1e3:.0f} ms/step, ratio {o['ratio']:.3f}")

    print("\n== MESS stage 1 (one sampled exit per iteration) ==")
    learn, tab1, t1 = stage1(dls, 'sample', epochs1, lr1)
    res['sample_stage1'] = dict(final_miou=float(tab1.loc[FINAL, 'miou']), epoch_s=t1, stage1_exits=tab1.reset_index().to_dict('records'))
    print("\n== MESS stage 2 (frozen backbone, every head at every candidate, PFD) ==")
    learn.to_stage2(grid.split(','))
    et = EpochTimer(); learn.fit_stage2(epochs2, lr2, cbs=[et])
    tab2 = learn.exit_table()
    learn.model.save(ckpt, overwrite=overwrite)
    res['stage2'] = dict(epoch_s=et.times, n_heads=len(learn.model.heads), exits=tab2.reset_index().to_dict('records'))

    if not skip_all:
        print("\n== stage 1 alternative: every exit at every iteration, losses summed ==")
        _, taba, ta = stage1(dls, 'all', epochs1, lr1)
        res['all_stage1'] = dict(final_miou=float(taba.loc[FINAL, 'miou']), epoch_s=ta, stage1_exits=taba.reset_index().to_dict('records'))
    if not skip_plain:
        print("\n== plain single-exit network, same epochs and schedule ==")
        _, tabp, tp = stage1(dls, 'sample', epochs1, lr1, positions=[])
        res['plain'] = dict(final_miou=float(tabp.loc[FINAL, 'miou']), epoch_s=tp)

    # ---- report
    med = lambda ts: float(np.median(ts)) if ts else float('nan')
    rows = [dict(run='MESS stage 1 (sample) -> final exit', epochs=epochs1, s_per_epoch=med(t1), final_miou=res['sample_stage1']['final_miou'])]
    if 'all_stage1' in res: rows.append(dict(run='stage 1 (all exits) -> final exit', epochs=epochs1, s_per_epoch=med(ta), final_miou=res['all_stage1']['final_miou']))
    if 'plain' in res: rows.append(dict(run='plain single-exit network', epochs=epochs1, s_per_epoch=med(tp), final_miou=res['plain']['final_miou']))
    rows.append(dict(run=f"MESS stage 2 ({res['stage2']['n_heads']} heads)", epochs=epochs2, s_per_epoch=med(et.times), final_miou=float(tab2.loc[FINAL, 'miou'])))
    summary = pd.DataFrame(rows); res['summary'] = summary.to_dict('records')
    best = tab2.drop(index=FINAL).sort_values('miou', ascending=False).groupby('pos').head(1).sort_values('pos')
    pd.set_option('display.width', 160)
    print("\nTraining runs (val mIoU of the final exit):"); print(summary.round(4).to_string(index=False))
    print("\nStage-2 exits: best head per position (val mIoU, cumulative GFLOPs at", size, "):")
    print(pd.concat([best, tab2.loc[[FINAL]]])[['pos', 'block', 'head', 'miou', 'acc', 'gflops', 'rel_cost']].round(4).to_string())
    print("\nAll stage-2 exits, mIoU by head (rows) and position (columns):")
    print(tab2.drop(index=FINAL).pivot_table(index='head', columns='pos', values='miou').round(3).to_string())
    print(f"\nfastai overhead: {o['ratio']:.3f}x a plain PyTorch loop per stage-1 step "
          f"({o['learner_step_s']*1e3:.0f} vs {o['plain_step_s']*1e3:.0f} ms, medians of {overhead_rounds} interleaved rounds of {overhead_steps} steps)")
    (out/'train.json').write_text(json.dumps(res, indent=1, default=float))
    print(f"wrote {out/'train.json'} and {ckpt}")
