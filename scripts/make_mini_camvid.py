#!/usr/bin/env python
"""Make the embedded mini CamVid set (mess_fast/data/camvid_mini) from a SegNet-layout CamVid copy.

Deterministic: the same source gives the same frames, files and README. Frames are chosen evenly spaced
inside each video sequence, the number per sequence proportional to the sequence's share of the split,
so the subset covers every sequence. Images are downscaled with a box filter (an exact 2x2 area average
from 360x480) and saved as JPEG; masks are downscaled with NEAREST (labels are never blended) and saved
as 8-bit PNG with the SegNet label values unchanged (0..10 classes, 11 Void).

    python scripts/make_mini_camvid.py                       # from the full CamVid (mess_fast.data.camvid_path())
    python scripts/make_mini_camvid.py --src path/to/camvid --force
"""
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image
from fastcore.script import call_parse

SPLITS = {'train': 'trainannot', 'val': 'valannot'}

def sequence_of(stem:str)->str:
    "CamVid frame names start with their sequence: '0016E5_07959' -> '0016E5'."
    return stem.split('_')[0]

def pick_frames(stems:list, n:int)->list:
    "`n` stems spread over every sequence: per sequence proportional (largest remainder), evenly spaced inside."
    by_seq = defaultdict(list)
    for s in sorted(stems): by_seq[sequence_of(s)].append(s)
    seqs = sorted(by_seq)
    if n > len(stems): raise ValueError(f"asked for {n} frames but the split has only {len(stems)}")
    quota = np.array([len(by_seq[q]) for q in seqs], dtype=float) * n / len(stems)
    k = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - k), kind='stable')[:n - k.sum()]: k[i] += 1
    res = []
    for q, kq in zip(seqs, k):
        fr = by_seq[q]
        idx = np.unique(np.linspace(0, len(fr) - 1, kq).round().astype(int)) if kq else []
        res += [fr[i] for i in idx]
    return res

README = """# camvid_mini: a small CamVid subset embedded in mess_fast

The default dataset of `mess_fast` (`mess_fast.data.mini_camvid_path()`), so that the quick start, the
notebooks and the tests run without downloading anything. It is **not** for benchmarking: use the full
CamVid for numbers.

## Source

Frames and labels of the Cambridge-driving Labeled Video Database (CamVid): G. J. Brostow, J. Fauqueur,
R. Cipolla, "Semantic object classes in video: A high-definition ground truth database", Pattern Recognition
Letters 30(2), 2009. We use the SegNet version (360x480, 11 classes + Void, as in the SegNet tutorial of
Badrinarayanan, Kendall and Cipolla), taken from its `train/` and `val/` splits.

## Licence

CamVid is made available by its authors for research use, with the request to cite the paper above; the
SegNet copy carries no separate licence file. This subset ({size_kb} kB) is redistributed, unchanged
except for resizing and JPEG compression, for teaching and testing under those same terms; it is **not**
covered by mess_fast's Apache-2.0 licence. If you use it, cite Brostow et al. (2009).

## Contents (SegNet layout)

- `train/` + `trainannot/`: {n_train} frames from CamVid `train` ({train_seqs})
- `val/` + `valannot/`: {n_val} frames from CamVid `val` ({val_seqs})
- `train.txt`, `val.txt`: the chosen frames, one `image mask` pair a line
- images: RGB JPEG (quality {quality}), {h}x{w}; masks: 8-bit PNG, {h}x{w}, values 0..10 =
  Sky, Building, Pole, Road, Pavement, Tree, SignSymbol, Fence, Car, Pedestrian, Bicyclist; 11 = Void.

## How it was made

`python scripts/make_mini_camvid.py --n-train {n_train} --n-val {n_val} --height {h} --width {w} --quality {quality}`
(deterministic). In each split the frames are spread over every video sequence: the number per sequence is
proportional to the sequence's share of the split and the frames are evenly spaced inside it. Images are
downscaled with a box filter, masks with NEAREST so that no label is ever blended.
"""

def _seq_counts(stems):
    c = defaultdict(int)
    for s in stems: c[sequence_of(s)] += 1
    return ', '.join(f'{k}: {v}' for k, v in sorted(c.items()))

@call_parse
def main(src:str=None, # SegNet-layout CamVid folder (default: mess_fast.data.camvid_path(): $MESS_FAST_CAMVID or shared/data/camvid beside the checkout)
         dest:str='mess_fast/data/camvid_mini', # Output folder
         n_train:int=80, # Frames taken from train/
         n_val:int=24, # Frames taken from val/
         height:int=180, # Output height
         width:int=240, # Output width
         quality:int=90, # JPEG quality of the images
         force:bool=False, # Replace `dest` if it exists
        ):
    "Write the embedded mini CamVid set to `dest` (refuses to overwrite unless --force)."
    if src is None:
        from mess_fast.data import camvid_path
        src = camvid_path()
    src = Path(src)
    dest = Path(dest)
    for d in [*SPLITS, *SPLITS.values()]:
        if not (src/d).is_dir(): raise SystemExit(f"{src/d}: missing; expected a SegNet-layout CamVid (train/ trainannot/ val/ valannot/)")
    if dest.exists():
        if not force: raise SystemExit(f"{dest} exists: pass --force to replace it")
        shutil.rmtree(dest)
    chosen = {}
    for split, ann, n in [('train', 'trainannot', n_train), ('val', 'valannot', n_val)]:
        stems = pick_frames([p.stem for p in (src/split).glob('*.png')], n)
        chosen[split] = stems
        (dest/split).mkdir(parents=True); (dest/ann).mkdir(parents=True)
        lines = []
        for s in stems:
            im = Image.open(src/split/f'{s}.png').convert('RGB').resize((width, height), Image.Resampling.BOX)
            im.save(dest/split/f'{s}.jpg', quality=quality, optimize=False)
            m = Image.open(src/ann/f'{s}.png')
            if m.mode != 'L': raise SystemExit(f"{src/ann/s}.png: mode {m.mode}, expected an 8-bit (L) label mask")
            m.resize((width, height), Image.Resampling.NEAREST).save(dest/ann/f'{s}.png', optimize=True)
            lines.append(f'{split}/{s}.jpg {ann}/{s}.png')
        (dest/f'{split}.txt').write_text('\n'.join(lines) + '\n')
    size_kb = sum(f.stat().st_size for f in dest.rglob('*') if f.is_file()) // 1024
    readme = README.format(n_train=len(chosen['train']), n_val=len(chosen['val']), h=height, w=width, quality=quality,
                           train_seqs=_seq_counts(chosen['train']), val_seqs=_seq_counts(chosen['val']),
                           size_kb='about ' + str(round(size_kb / 100) * 100))
    (dest/'README.md').write_text(readme)
    print(f"wrote {len(chosen['train'])} train + {len(chosen['val'])} val frames to {dest} ({size_kb} kB)")
