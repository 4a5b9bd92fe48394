"""Training-scheme ablations on the benchmark setting of `bench_train.py` (ResNet-18, output stride 8, CamVid at
120x160 split by sequence, 30 epochs of stage 1 and 8 of stage 2, fixed schedules, from scratch):

1. stage 1 with every exit trained at every step ('all', losses summed) instead of one sampled exit (the paper's);
2. a plain single-exit network (the same backbone and DeepLabV3 head, no exit at all, the same recipe);
3. stage 2 without Positive Filtering Distillation (plain cross-entropy for every head) on the benchmark network's
   own stage-1 backbone (`results/mess_r18.pth`), against the same heads trained with PFD (`results/train.json`).

Reports the final-exit mIoU of each stage-1 variant and every head's mIoU with and without PFD on the evaluation
half (the held-out sequence's second half), and writes results/ablations.json and ablations.txt.

    python bench/bench_ablations.py                        # all three, in this order; hours here (see below)
    python bench/bench_ablations.py --parts no_pfd --resume  # one part, kept beside those already in ablations.json

On otherwise idle cores here the plain network took 33 minutes (66 s per stage-1 epoch) and stage 2 without PFD 32
minutes; 'all' (every exit at every step: all seven early heads at every step instead of one) took 45 minutes (88 s
per epoch). Run the parts one at a time (`--parts`, `--resume`) on otherwise idle cores.
"""
import json, time, datetime, platform
from pathlib import Path
import pandas as pd, torch
from fastcore.script import call_parse
from mess_fast.model import MESSNet
from mess_fast.core import FINAL, defaults
from mess_fast.train import mess_learner
from fastai.torch_core import set_seed
from common import RESULTS, CKPT, camvid_loaders

def run_stage1(dls, mode, epochs, lr, output_stride, positions=None):
    set_seed(0, reproducible=True)
    learn = mess_learner(dls, stage1=mode, seed=0, positions=positions, output_stride=output_stride)
    t = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit_stage1(epochs, lr)
    return learn, (time.perf_counter() - t) / epochs

def final_miou(learn, dl):
    with learn.no_bar(): return float(learn.exit_table(dl).loc[FINAL, 'miou'])

def records(tab): return json.loads(tab.reset_index().to_json(orient='records'))

def no_pfd(res, say, dls, eval_dl, grid, epochs2, lr2, output_stride, out):
    "Stage 2 without PFD on the benchmark network's own stage-1 backbone, against its heads trained with PFD"
    say("== stage 2 without PFD, on the benchmark network's stage-1 backbone ==")
    set_seed(0, reproducible=True)
    ln = mess_learner(dls, seed=0, output_stride=output_stride, positions=[])
    sd = MESSNet.load(CKPT).state_dict()
    ln.model.load_state_dict({k: v for k, v in sd.items() if not k.startswith('heads.')})
    ln.to_stage2(grid.split(','), distill=0.)
    t = time.perf_counter()
    with ln.no_bar(), ln.no_logging(): ln.fit_stage2(epochs2, lr2)
    with ln.no_bar(): tab = ln.exit_table(eval_dl)   # no progress bar in the log
    res['no_pfd_stage2'] = dict(s_per_epoch=(time.perf_counter() - t) / epochs2, exits=records(tab))
    with_pfd = pd.DataFrame(json.loads((out/'train.json').read_text())['stage2']['exits']['eval']).set_index('key').miou
    cmp = pd.DataFrame(dict(pfd=with_pfd, no_pfd=tab.miou)).drop(index=FINAL)
    cmp['gain_pp'] = (cmp.pfd - cmp.no_pfd) * 100
    res['pfd_comparison'] = dict(mean_pfd=float(cmp.pfd.mean()), mean_no_pfd=float(cmp.no_pfd.mean()),
                                 heads_better_with_pfd=int((cmp.gain_pp > 0).sum()), n_heads=len(cmp))
    say(cmp.round(4).to_string())
    say(res['pfd_comparison'])


@call_parse
def main(epochs1:int=30, epochs2:int=8, lr1:float=defaults.lr1, lr2:float=defaults.lr2,
         grid:str=','.join(defaults.grid),  # Stage-2 heads (as bench_train.py)
         output_stride:int=8, bs:int=8, threads:int=2,
         out:str=str(RESULTS),              # Results folder
         overwrite:bool=False,              # Replace an existing ablations.json
         parts:str='all,plain,no_pfd',      # Which variants to run, in this order
         resume:bool=False,                 # Keep the parts already in ablations.json (re-running only those asked for)
        ):
    "Train the ablation variants; print tables; write ablations.json and ablations.txt"
    torch.set_num_threads(threads)
    out = Path(out)
    parts = parts.split(',')
    if bad := set(parts) - {'all', 'plain', 'no_pfd'}: raise SystemExit(f"--parts: unknown {sorted(bad)}; expected all, plain, no_pfd")
    if (out/'ablations.json').exists() and not (overwrite or resume):
        raise SystemExit(f"{out.name}/ablations.json exists: pass --resume (add parts) or --overwrite")
    if not CKPT.exists(): raise SystemExit(f"{CKPT.name} is missing: run bench/bench_train.py first")
    dls, calib_dl, eval_dl = camvid_loaders(bs)
    report = []
    def say(*a):
        s = ' '.join(str(o) for o in a); print(s, flush=True); report.append(s)
    def save():   # after every variant: a run stopped part-way keeps what it measured
        (out/'ablations.json').write_text(json.dumps(res, indent=1, default=float))
        (out/'ablations.txt').write_text('\n'.join(str(r) for r in report) + '\n')
    setting = dict(torch=torch.__version__, python=platform.python_version(),
                   epochs1=epochs1, epochs2=epochs2, lr1=lr1, lr2=lr2, grid=grid.split(','), output_stride=output_stride, threads=threads)
    res = json.loads((out/'ablations.json').read_text()) if resume and (out/'ablations.json').exists() else {}
    if res and any(res.get(k) != v for k, v in setting.items() if k not in ('torch', 'python')):
        raise SystemExit(f"{out.name}/ablations.json was measured with another setting: pass --overwrite")
    if res: report.extend((out/'ablations.txt').read_text().splitlines())
    res.update(setting)
    def stamp(part): res.setdefault('dates', {})[part] = datetime.datetime.now().isoformat(timespec='seconds')
    for part in parts:
        if part == 'all':
            say("== stage 1 with every exit at every step ('all') ==")
            la, ta = run_stage1(dls, 'all', epochs1, lr1, output_stride)
            res['all_stage1'] = dict(s_per_epoch=ta, final_miou_eval=final_miou(la, eval_dl))
            stamp(part); say(res['all_stage1']); save()
        elif part == 'plain':
            say("== plain single-exit network ==")
            lp, tp = run_stage1(dls, 'sample', epochs1, lr1, output_stride, positions=[])
            res['plain'] = dict(s_per_epoch=tp, final_miou_eval=final_miou(lp, eval_dl))
            stamp(part); say(res['plain']); save()
        else: no_pfd(res, say, dls, eval_dl, grid, epochs2, lr2, output_stride, out); stamp(part); save()
    print(f"wrote ablations.json and ablations.txt to {out.name}/")

