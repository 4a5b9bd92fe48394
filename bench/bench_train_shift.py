"""The network of the trust benchmarks (certified picks, online control, int8): trained on ONE CamVid sequence.

ResNet-18 MESS, the recipe of `bench_train.py` (from scratch, output stride 8, 120x160, DeepLabV3 final head, stage 1
30 epochs with one sampled exit per iteration, stage 2 8 epochs with 4 head types at every candidate but the last, PFD),
trained on every frame of sequence 0016E5 (CamVid's train and val frames of it: 204 + 101 = 305). The sequences 0001TP
(62 frames) and 0006R0 (101 frames) are never trained on: they are the "other streets" on which calibration,
certification and online control are judged (`bench_certify.py`, `bench_online.py`).

Training watches the first 20 frames of the last unseen sequence (0006R0 by default; fixed schedules: no choice is made on them).
Writes `results/shift_train.json`, `results/shift_train.txt` and `results/mess_r18_0016E5.pth` (not in git). With
`--train-seq 0006R0` the network is trained on 0006R0 (101 frames) and judged on 0001TP and 0016E5 (305 frames, a long
stream): the out-of-sample check of what the trust benchmark chose on the 0016E5 network.

    python bench/bench_train_shift.py          # about 1 h on 2 otherwise idle cores
    python bench/bench_train_shift.py --train-seq 0006R0 --epochs1 60 --epochs2 15 --out results/os8_0006R0   # the same iterations: 101 frames
"""
import json, datetime, platform
from dataclasses import replace
from pathlib import Path
import numpy as np, pandas as pd, torch
from fastcore.script import call_parse
from mess_fast.core import FINAL, defaults
from mess_fast.data import camvid_path, seg_source, sequence_of
from mess_fast.loaders import mess_dls, labelled_dl
from bench_train import run_stage1, run_stage2, records
from common import RESULTS, SIZE

SEQUENCES = ('0001TP', '0006R0', '0016E5')            # CamVid's sequences in ../shared (Seq05VD has no frames there)
TRAIN_SEQ, UNSEEN = '0016E5', ('0001TP', '0006R0')
SHIFT_CKPT = RESULTS/'mess_r18_0016E5.pth'

def unseen_of(train_seq=TRAIN_SEQ):
    "The sequences a network trained on `train_seq` never saw"
    if train_seq not in SEQUENCES: raise SystemExit(f"--train-seq: expected one of {SEQUENCES}, got {train_seq!r}")
    return tuple(s for s in SEQUENCES if s != train_seq)

def shift_split(train_seq=TRAIN_SEQ):
    "`(source: train = every frame of train_seq, valid = the unseen sequences' frames in frame order)`"
    return seg_source(camvid_path(), valid='val').by_sequence(list(unseen_of(train_seq)), train=[train_seq])

def unseen_pairs(src, seq):
    "The frames of unseen sequence `seq`, in frame order (`by_sequence` keeps it: 0016E5's frames lie in train/ and val/)"
    return [p for p in src.valid if sequence_of(p[0]) == seq]

def training_drive(src):
    ("The training sequence's frames a deployment is chosen on: those of its `val/` folder (0016E5's 101), else its last "
     "101 frames (`src` is in frame order)")
    return [p for p in src.train if 'val' in Path(p[0]).parent.name] or src.train[-101:]

@call_parse
def main(train_seq:str=TRAIN_SEQ, output_stride:int=8, bs:int=8, epochs1:int=30, epochs2:int=8, lr1:float=defaults.lr1, lr2:float=defaults.lr2,
         grid:str=','.join(defaults.grid), threads:int=2, out:str=str(RESULTS), overwrite:bool=False):
    "Train the one-sequence network; write shift_train.json/.txt and mess_r18_TRAINSEQ.pth"
    torch.set_num_threads(threads)
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    ckpt, unseen = out/f'mess_r18_{train_seq}.pth', unseen_of(train_seq)
    if ckpt.exists() and not overwrite: raise SystemExit(f"{ckpt.name} exists: pass --overwrite to replace it")
    src = shift_split(train_seq)
    watch = unseen_pairs(src, unseen[-1])[:20]
    dls = mess_dls(replace(src, valid=watch), size=SIZE, bs=bs)
    report = []
    def say(*a):
        s = ' '.join(str(o) for o in a); print(s, flush=True); report.append(s)
    say(f"train {train_seq}: {len(dls.train_ds)} frames; unseen {unseen}; {SIZE}, bs={bs}, output stride {output_stride}")
    res = dict(date=datetime.datetime.now().isoformat(timespec='seconds'), train_sequence=train_seq, unseen=list(unseen),
               n_train=len(dls.train_ds), size=list(SIZE), bs=bs, threads=threads, epochs1=epochs1, epochs2=epochs2, lr1=lr1,
               lr2=lr2, grid=grid.split(','), torch=torch.__version__, python=platform.python_version(), arch='resnet18',
               output_stride=output_stride, pretrained=False)
    learn, t1 = run_stage1(dls, 'sample', epochs1, lr1, output_stride)
    say(f"stage 1: {np.median(t1):.1f} s/epoch")
    t2 = run_stage2(learn, grid.split(','), epochs2, lr2, defaults.distill)
    learn.model.save(ckpt, overwrite=overwrite)
    say(f"stage 2: {len(learn.model.heads)} heads, {np.median(t2):.1f} s/epoch; wrote {ckpt.name}")
    res['stage1_epoch_s'], res['stage2_epoch_s'], tabs = t1, t2, {}
    pd.set_option('display.width', 180)
    for seq in unseen:
        t = learn.exit_table(labelled_dl(dls, unseen_pairs(src, seq), bs=8))
        tabs[seq] = records(t)
        say(f"\n{seq} (never trained on), mIoU by head and position:")
        say(t.drop(index=FINAL).pivot_table(index='head', columns='pos', values='miou').round(3).to_string()
            + f"\nfinal: {t.loc[FINAL, 'miou']:.4f}")
    res['exits'] = tabs
    (out/'shift_train.json').write_text(json.dumps(res, indent=1, default=float))
    (out/'shift_train.txt').write_text('\n'.join(report) + '\n')
