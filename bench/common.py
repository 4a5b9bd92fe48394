"""What the benchmark scripts share: the CamVid split by video sequence and the trained network's location.

Training uses sequences 0001TP and 0016E5 (CamVid's train and val frames of them); sequence 0006R0 is held out and
cut in time into a calibration half (first 51 frames: where the search chooses) and an evaluation half (last 50:
where the choice is measured). Nothing is chosen on a frame it is reported on, and no reported frame comes from a
sequence the network was trained on.
"""
from dataclasses import replace
from pathlib import Path
from mess_fast.data import camvid_path, seg_source, split_pairs
from mess_fast.loaders import mess_dls, labelled_dl
HERE = Path(__file__).resolve().parent
RESULTS = HERE/'results'
CKPT = RESULTS/'mess_r18.pth'
HELD_OUT = '0006R0'
SIZE = (120, 160)

def camvid_split():
    "`(source regrouped by sequence, calibration pairs, evaluation pairs)`"
    src = seg_source(camvid_path(), valid='val').by_sequence(HELD_OUT)
    calib, evalp = split_pairs(src.valid, 'halves')
    return src, calib, evalp

def camvid_loaders(bs=8, size=SIZE):
    "`(dls training on the training sequences and validating on the calibration half, calibration dl, evaluation dl)`"
    src, calib, evalp = camvid_split()
    dls = mess_dls(replace(src, valid=calib), size=size, bs=bs)
    return dls, labelled_dl(dls, calib, bs=8), labelled_dl(dls, evalp, bs=8)

def rel(p):
    "A path relative to the repository, for reports (never a machine path)"
    return str(Path(p).resolve().relative_to(HERE.parent))
