"""Distributed (DDP) training on this CPU machine: time per stage-1 and stage-2 epoch with 1 and 2 processes.

The data and network of `bench_train.py`, at the library's default output stride: full CamVid split by video sequence
(`common.camvid_loaders`: 367 training frames of sequences 0001TP and 0016E5; the 51-frame calibration half of the
held-out 0006R0 as validation), 120x160 inputs, batch size 8 *per process*, ResNet-18 from scratch at output
stride 16; stage 1 samples one exit per iteration; stage 2 trains the default grid at every candidate (28 heads).
Short runs (2 epochs per stage by default): the point is the cost of an epoch on the distributed path, not accuracy.

Configurations, each in fresh processes started by `mess_fast.distributed.distrib_launch` (same code path, `accelerate
launch`; with one process `distrib_ctx` is a no-op):
- 1 process x 2 threads: how one trains on this machine without DDP;
- 1 process x 1 thread: the per-process baseline of the 2-process run;
- 2 processes x 1 thread: DDP over gloo, each process with half of every epoch (effective batch 16).

Each epoch is split into its training and validation phases (rank 0's clock); the tables give the median of the
epochs after the first (the first also pays one-time costs: allocations, DDP's first bucket rebuild), the JSON
every epoch. Startup is the launch's wall time minus the fits: process start, imports, data and network set-up.

    python bench/bench_ddp.py                 # about 25 min here (2 cores); check `ps aux | grep bench_` first
    python bench/bench_ddp.py --tiny          # smoke test: embedded mini CamVid, 48x64, 2 x 2 heads; writes nothing
Writes `results/ddp.json` and `results/ddp.txt` (no local paths).
"""
import datetime, json, os, platform, statistics, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))   # `common`, also in the launched processes
import torch
from fastcore.script import call_parse
from fastai.callback.core import Callback
from fastai.torch_core import set_seed, rank_distrib
from mess_fast.core import defaults
from mess_fast.train import mess_learner
from mess_fast.distributed import distrib_launch
from common import RESULTS, camvid_loaders

CONFIGS = [(1, 2), (1, 1), (2, 1)]   # (processes, threads per process)


class PhaseTimer(Callback):
    "Wall time of the training and validation phase of every epoch"
    order = 99
    def before_fit(self): self.train, self.valid, self.steps = [], [], 0
    def after_batch(self): self.steps += self.training
    def before_train(self): self.t = time.perf_counter()
    def after_train(self): self.train.append(time.perf_counter() - self.t)
    def before_validate(self): self.t = time.perf_counter()
    def after_validate(self): self.valid.append(time.perf_counter() - self.t)


def worker(epochs1:int, epochs2:int, grid, positions, tiny:bool):
    "Runs in every launched process: stage 1 and stage 2 under `distrib_ctx`; rank 0 returns the timings"
    set_seed(0, reproducible=True)
    if tiny:
        from mess_fast.loaders import mess_dls
        dls = mess_dls(size=(48, 64), bs=4, max_items=16)
    else: dls = camvid_loaders(bs=8, size=(120, 160))[0]
    learn = mess_learner(dls, seed=0)
    res = dict(threads=torch.get_num_threads(), n_train=len(dls.train_ds), n_valid=len(dls.valid_ds), bs_per_process=dls.train.bs)
    with learn.distrib_ctx():
        for stage in (1, 2):
            if stage == 2: learn.to_stage2(grid, positions)
            pt = PhaseTimer(); t = time.perf_counter()
            with learn.no_bar():
                if stage == 1: learn.fit_stage1(epochs1, cbs=[pt])
                else: learn.fit_stage2(epochs2, cbs=[pt])
            res[f'stage{stage}'] = dict(fit_s=time.perf_counter() - t, train_s=pt.train, valid_s=pt.valid,
                                        epoch_s=[a + b for a, b in zip(pt.train, pt.valid)],
                                        steps_per_epoch=pt.steps // max(1, len(pt.train)),
                                        final_miou=float(dict(zip(learn.recorder.metric_names[1:], learn.recorder.values[-1]))['miou final']))
        res['n_heads'] = len(learn.net.heads)
    return res if rank_distrib() == 0 else None


def med(v):
    "Median of the epochs after the first (the only one if there is one)"
    v = v[1:] if len(v) > 1 else v
    return statistics.median(v) if v else float('nan')


@call_parse
def main(epochs1:int=2,     # Stage-1 epochs per configuration
         epochs2:int=2,     # Stage-2 epochs per configuration
         tiny:bool=False,   # Smoke test on the embedded mini CamVid (nothing written unless --out)
         out:str=None,      # Results folder (default results/, or nothing with --tiny)
        ):
    "Time stage-1 and stage-2 epochs on 1 and 2 processes; print a table; write ddp.json and ddp.txt"
    grid, positions = (['fcn-b0', 'aspp-crm-b0'], [1, 3]) if tiny else (list(defaults.grid), None)
    out = Path(out) if out else (None if tiny else RESULTS)
    report, runs = [], []
    def say(*a):
        s = ' '.join(str(o) for o in a); print(s, flush=True); report.append(s)
    for nproc, threads in CONFIGS:
        say(f"== {nproc} process(es) x {threads} thread(s) ==")
        t = time.perf_counter()
        r = distrib_launch(f"{Path(__file__).resolve()}:worker", nproc, kwargs=dict(epochs1=epochs1, epochs2=epochs2, grid=grid,
                           positions=positions, tiny=tiny), threads=threads, timeout=4 * 3600, quiet=True)
        wall = time.perf_counter() - t
        r.update(nproc=nproc, wall_s=wall, startup_s=wall - r['stage1']['fit_s'] - r['stage2']['fit_s'])
        runs.append(r)
        for s in (1, 2):
            d = r[f'stage{s}']
            say(f"stage {s}: {med(d['epoch_s']):.1f} s/epoch (train {med(d['train_s']):.1f} + valid {med(d['valid_s']):.1f}), "
                f"{d['steps_per_epoch']} steps/epoch per process, final mIoU {d['final_miou']:.4f}")
        say(f"startup {r['startup_s']:.1f} s, wall {wall:.1f} s")
    base = runs[0]
    rows = []
    for r in runs:
        row = {'config': f"{r['nproc']} proc x {r['threads']} thr", 'effective batch': r['nproc'] * r['bs_per_process']}
        for s in (1, 2):
            d = r[f'stage{s}']
            row[f'stage {s} s/epoch'] = round(med(d['epoch_s']), 1)
            row[f'stage {s} train / valid s'] = f"{med(d['train_s']):.1f} / {med(d['valid_s']):.1f}"
            row[f'stage {s} vs 1x2'] = round(med(base[f'stage{s}']['epoch_s']) / med(d['epoch_s']), 2)
        row['startup s'] = round(r['startup_s'], 1)
        rows.append(row)
    import pandas as pd
    with pd.option_context('display.width', 250, 'display.max_columns', 20):
        say("\nPer-epoch wall time (median of the epochs after the first; 'vs 1x2' > 1 means faster than one process with both cores):")
        say(pd.DataFrame(rows).to_string(index=False))
    res = dict(date=datetime.datetime.now().isoformat(timespec='seconds'), tiny=tiny, cores=os.cpu_count(),
               torch=torch.__version__, python=platform.python_version(), backend='gloo' if not torch.cuda.is_available() else 'nccl',
               data='embedded mini CamVid, 16/16 frames, 48x64, bs 4' if tiny else
                    'CamVid by sequence (common.camvid_loaders): 367 train frames, 51 calibration frames as validation, 120x160, bs 8 per process',
               arch='resnet18', output_stride=16, grid=grid, epochs1=epochs1, epochs2=epochs2, runs=runs, table=rows)
    if out is None: print(json.dumps(res, indent=1, default=float)[:2000]); return
    out.mkdir(parents=True, exist_ok=True)
    (out/'ddp.json').write_text(json.dumps(res, indent=1, default=float))
    (out/'ddp.txt').write_text('\n'.join(report) + '\n')
    print(f"wrote ddp.json and ddp.txt to {out.name}/")
