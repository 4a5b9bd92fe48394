"""Train a MESS network on CamVid sequence 0016E5 alone — the protocol of `bench_train_shift.py` (0001TP and 0006R0
stay unseen) for any architecture — and save it, for `bench_int8.py --ckpt`.

    python bench/train_shift_model.py --arch tv:lraspp_mobilenet_v3_large --positions 3,6,9,12 --stem lraspp
        (20 + 5 epochs: about 25 min here with other work on the cores)

Writes results/mess_<stem>_0016E5.pth and results/shift_train_<stem>.json / .txt (exit tables on both unseen sequences).
"""
import json, time, datetime, platform
from dataclasses import replace
import torch
from fastcore.script import call_parse
from fastai.torch_core import set_seed
from mess_fast.core import FINAL, defaults
from mess_fast.loaders import mess_dls, labelled_dl
from mess_fast.train import mess_learner
from bench_train_shift import shift_split, unseen_pairs, UNSEEN, TRAIN_SEQ
from common import RESULTS, SIZE

@call_parse
def main(arch:str='tv:lraspp_mobilenet_v3_large', # Backbone or model to convert
         stem:str='lraspp',      # Names the checkpoint and the results: mess_<stem>_0016E5.pth
         positions:str='',       # Stage-2 candidate positions, comma-separated; empty: every candidate but the last
         epochs1:int=20, epochs2:int=5, bs:int=8, lr1:float=defaults.lr1, lr2:float=defaults.lr2,
         grid:str=','.join(defaults.grid), threads:int=2, overwrite:bool=False):
    "Train (stage 1 sampled, stage 2 with PFD) on 0016E5; save the network; print its exit tables on the unseen sequences"
    torch.set_num_threads(threads)
    ckpt = RESULTS/f'mess_{stem}_0016E5.pth'
    if ckpt.exists() and not overwrite: raise SystemExit(f"{ckpt.name} exists: pass --overwrite to replace it")
    src = shift_split()
    dls = mess_dls(replace(src, valid=unseen_pairs(src, '0006R0')[:20]), size=SIZE, bs=bs)
    set_seed(0, reproducible=True)
    learn = mess_learner(dls, arch=arch, seed=0)
    t = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit_stage1(epochs1, lr1)
    t1 = (time.perf_counter() - t) / epochs1
    learn.to_stage2(grid.split(','), [int(v) for v in positions.split(',') if v.strip()] or None)
    t = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit_stage2(epochs2, lr2)
    t2 = (time.perf_counter() - t) / epochs2
    learn.model.save(ckpt, overwrite=overwrite)
    lines = [f"{arch} trained on {TRAIN_SEQ} ({len(dls.train_ds)} frames), {SIZE}, {epochs1}+{epochs2} epochs: "
             f"stage 1 {t1:.1f} s/epoch, stage 2 {len(learn.model.heads)} heads {t2:.1f} s/epoch; wrote {ckpt.name}"]
    res = dict(date=datetime.datetime.now().isoformat(timespec='seconds'), arch=arch, train_sequence=TRAIN_SEQ,
               n_train=len(dls.train_ds), size=list(SIZE), epochs1=epochs1, epochs2=epochs2, lr1=lr1, lr2=lr2,
               grid=grid.split(','), positions=positions, stage1_epoch_s=t1, stage2_epoch_s=t2, torch=torch.__version__,
               python=platform.python_version(), exits={})
    for seq in UNSEEN:
        with learn.no_bar(): tab = learn.exit_table(labelled_dl(dls, unseen_pairs(src, seq), bs=8))
        res['exits'][seq] = json.loads(tab.reset_index().to_json(orient='records'))
        lines.append(f"\n{seq} (never trained on), mIoU by head and position:\n"
                     + tab.drop(index=FINAL).pivot_table(index='head', columns='pos', values='miou').round(3).to_string()
                     + f"\nfinal: {tab.loc[FINAL, 'miou']:.4f}")
    (RESULTS/f'shift_train_{stem}.json').write_text(json.dumps(res, indent=1, default=float))
    (RESULTS/f'shift_train_{stem}.txt').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))
