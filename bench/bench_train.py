"""Two-stage MESS training benchmark on the full CamVid, split by video sequence.

The network every later benchmark uses (search, early exiting, ONNX): ResNet-18 from scratch at output stride 8
(the paper's DRN-style dilated backbone), 120x160 inputs, DeepLabV3 final head.

Splits, by video sequence (the file-name prefix), so that nothing is evaluated on a sequence the network saw:
- training: sequences 0001TP and 0016E5 (CamVid's train and val frames of them: 62 + 204 + 101 = 367 frames);
- held out: sequence 0006R0 (101 frames), cut in time into a *calibration* half (the first 51 frames, used to
  watch training here and by the search to choose exits and thresholds) and an *evaluation* half (the last 50
  frames, used only to report).

Runs:
1. MESS stage 1 with one exit sampled per iteration (the paper's), then stage 2 (frozen backbone, every head of
   `--grid` at every candidate but the last, PFD). The stage-2 network is saved to `results/mess_r18.pth`.
(The fastai overhead per training step is `bench_overhead.py`; the ablations — stage 1 with every exit at every step, a plain single-exit network, stage 2 without PFD — are
`bench_ablations.py`, on the same data and schedule.)

No checkpoint is chosen by validation score (fixed schedules), so the held-out frames never steer training.
Writes `results/train.json` and `results/train.txt` (tables only, no progress bars, no local paths).

    python bench/bench_train.py                 # about 1 h here on 2 otherwise idle cores
"""
import json, time, datetime, platform
from pathlib import Path
import numpy as np, pandas as pd, torch
from fastcore.script import call_parse
from mess_fast.core import FINAL, defaults
from mess_fast.train import mess_learner
from fastai.callback.core import Callback
from fastai.torch_core import set_seed
from common import RESULTS, CKPT, HELD_OUT, camvid_split, camvid_loaders


class EpochTimer(Callback):
    order = 99
    def before_fit(self): self.times = []
    def before_epoch(self): self.t0 = time.perf_counter()
    def after_epoch(self): self.times.append(time.perf_counter() - self.t0)


def tables(learn, calib_dl, eval_dl):
    "Per-exit tables on the calibration and evaluation halves"
    return {name: learn.exit_table(dl) for name, dl in (('calib', calib_dl), ('eval', eval_dl))}


def run_stage1(dls, mode, epochs, lr, output_stride, positions=None):
    set_seed(0, reproducible=True)
    learn = mess_learner(dls, stage1=mode, seed=0, positions=positions, output_stride=output_stride)
    et = EpochTimer()
    with learn.no_bar(): learn.fit_stage1(epochs, lr, cbs=[et])
    return learn, et.times


def run_stage2(learn, grid, epochs, lr, distill):
    learn.to_stage2(grid, distill=distill)
    et = EpochTimer()
    with learn.no_bar(): learn.fit_stage2(epochs, lr, cbs=[et])
    return et.times


def records(tab): return json.loads(tab.reset_index().to_json(orient='records'))


@call_parse
def main(output_stride:int=8,  # Backbone output stride (8: the paper's dilated ResNet)
         height:int=120,       # Input height
         width:int=160,        # Input width
         bs:int=8,             # Batch size
         epochs1:int=30,       # Stage-1 epochs (and the plain network's)
         epochs2:int=8,        # Stage-2 epochs
         lr1:float=defaults.lr1, # Stage-1 maximum learning rate
         lr2:float=defaults.lr2, # Stage-2 maximum learning rate
         grid:str=','.join(defaults.grid), # Stage-2 heads
         threads:int=2,        # torch threads
         out:str=str(RESULTS), # Results folder
         overwrite:bool=False,  # Replace an existing mess_r18.pth
        ):
    "Train the benchmark network; print tables; write train.json, train.txt and mess_r18.pth"
    torch.set_num_threads(threads)
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    ckpt = out/CKPT.name
    if ckpt.exists() and not overwrite: raise SystemExit(f"{ckpt} exists: pass --overwrite to replace it")
    size, grid = (height, width), grid.split(',')
    src, calib, evalp = camvid_split()
    dls, calib_dl, eval_dl = camvid_loaders(bs, size)        # training watches the calibration half only
    report = []
    def say(*a):
        s = ' '.join(str(o) for o in a); print(s); report.append(s)
    say(f"CamVid by sequence: train {src.sequences('train')} = {len(dls.train_ds)} frames; held out {HELD_OUT}: "
        f"{len(calib)} calibration + {len(evalp)} evaluation frames; {size}, bs={bs}, threads={threads}, output stride {output_stride}")
    res = dict(date=datetime.datetime.now().isoformat(timespec='seconds'), data='CamVid (SegNet layout, train + val folders)',
               split=dict(train_sequences=src.sequences('train'), held_out=HELD_OUT, calib=[Path(p[0]).name for p in calib],
                          eval=[Path(p[0]).name for p in evalp]),
               size=list(size), bs=bs, threads=threads, epochs1=epochs1, epochs2=epochs2, lr1=lr1, lr2=lr2, grid=grid,
               torch=torch.__version__, python=platform.python_version(), arch='resnet18', output_stride=output_stride,
               pretrained=False)
    pd.set_option('display.width', 180)

    say("\n== MESS stage 1 (one sampled exit per iteration) ==")
    learn, t1 = run_stage1(dls, 'sample', epochs1, lr1, output_stride)
    tab1 = learn.exit_table(eval_dl)
    res['sample_stage1'] = dict(epoch_s=t1, final_miou_eval=float(tab1.loc[FINAL, 'miou']))
    say(f"stage 1: {np.median(t1):.1f} s/epoch, final-exit mIoU on the evaluation half {tab1.loc[FINAL, 'miou']:.4f}")
    say("\n== MESS stage 2 (frozen backbone, every head at every candidate, PFD) ==")
    t2 = run_stage2(learn, grid, epochs2, lr2, defaults.distill)
    learn.model.save(ckpt, overwrite=overwrite)
    tabs = tables(learn, calib_dl, eval_dl)
    res['stage2'] = dict(epoch_s=t2, n_heads=len(learn.model.heads), exits={k: records(t) for k, t in tabs.items()})
    say(f"stage 2: {len(learn.model.heads)} heads, {np.median(t2):.1f} s/epoch; wrote {ckpt.name}")
    te = tabs['eval']
    best = te.drop(index=FINAL).sort_values('miou', ascending=False).groupby('pos').head(1).sort_values('pos')
    say("\nBest head per position (mIoU on the evaluation half; GFLOPs per image up to and including the exit):")
    say(pd.concat([best, te.loc[[FINAL]]])[['pos', 'block', 'head', 'miou', 'acc', 'gflops', 'rel_cost']].round(4).to_string())
    say("\nAll stage-2 exits, mIoU on the evaluation half by head (rows) and position (columns):")
    say(te.drop(index=FINAL).pivot_table(index='head', columns='pos', values='miou').round(3).to_string())
    say("\nThe same on the calibration half:")
    say(tabs['calib'].drop(index=FINAL).pivot_table(index='head', columns='pos', values='miou').round(3).to_string()
        + f"\nfinal: {tabs['calib'].loc[FINAL, 'miou']:.4f}")

    (out/'train.json').write_text(json.dumps(res, indent=1, default=float))
    (out/'train.txt').write_text('\n'.join(report) + '\n')
    print(f"wrote train.json, train.txt and {ckpt.name} to {out.name}/")
