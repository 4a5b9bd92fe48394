"Data pipeline: real CamVid, the embedded set, the three layouts, the resolution order, and every kind of bad input."
from pathlib import Path

import numpy as np, pytest, torch
from PIL import Image
from mess_fast.data import *
from mess_fast.data import DataError
from mess_fast.checks import *
from mess_fast.loaders import *
from mess_fast.imaging import IMAGENET_MEAN, IMAGENET_STD

@pytest.fixture(scope='module')
def camvid():
    "The full CamVid (`camvid_path()`: $MESS_FAST_CAMVID, else fastai's CamVid), or skip"
    try: p = camvid_path()
    except FileNotFoundError as e: pytest.skip(f"full CamVid not found: {e}")
    if detect_layout(p) != 'segnet': pytest.skip(f"{p} is not in SegNet layout (train/ trainannot/ val/ valannot/)")
    return p

# ---------------------------------------------------------------- helpers that write real files
def save_img(fn, h=12, w=16, mode='RGB', value=None):
    fn.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(fn)))
    if mode == 'RGB': a = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    elif mode == 'RGBA': a = rng.integers(0, 255, (h, w, 4), dtype=np.uint8)
    else: a = rng.integers(0, 255, (h, w), dtype=np.uint8)
    if value is not None: a[:] = value
    Image.fromarray(a, mode=mode).save(fn)
    return fn

def save_mask(fn, h=12, w=16, n=3, value=None):
    fn.parent.mkdir(parents=True, exist_ok=True)
    a = (np.arange(h*w).reshape(h, w) % n).astype(np.uint8) if value is None else np.full((h, w), value, np.uint8)
    Image.fromarray(a, mode='L').save(fn)
    return fn

def segnet_ds(root, n_train=4, n_val=2, n_codes=12):
    "A tiny SegNet-layout dataset: train/ trainannot/ val/ valannot/, CamVid codes."
    for split, n in (('train', n_train), ('val', n_val)):
        for i in range(n):
            save_img(root/split/f'f{i}.png'); save_mask(root/f'{split}annot'/f'f{i}.png', n=n_codes)
    return root

def fastai_ds(root, codes=('Road', 'Car', 'Void', 'Tree', 'Sky'), n=6, n_valid=2):
    "A tiny fastai-layout dataset: images/, labels/<stem>_P.png, codes.txt (Void in the middle), valid.txt."
    for i in range(n):
        save_img(root/'images'/f'img{i}.png'); save_mask(root/'labels'/f'img{i}_P.png', n=len(codes))
    (root/'codes.txt').write_text('\n'.join(codes) + '\n')
    (root/'valid.txt').write_text('\n'.join(f'img{i}.png' for i in range(n - n_valid, n)) + '\n')
    return root

def all_items(dls):
    "Load every item of both splits (this is where per-item checks run)."
    for ds in (dls.train_ds, dls.valid_ds):
        for i in range(len(ds)): ds[i]

# ---------------------------------------------------------------- real CamVid
def test_shared_camvid_counts_and_codes(camvid):
    assert detect_layout(camvid) == 'segnet'
    src = seg_source(camvid)
    assert (len(src.train), len(src.valid)) == (367, 101)
    assert (src.codes, src.void_code) == (CAMVID_CODES, CAMVID_VOID) and len(CAMVID_CODES) == 12 and CAMVID_VOID == 11
    dls = mess_dls(camvid, size=(90, 120), bs=2, max_items=4)
    x, y = dls.one_batch()
    assert x.shape == (2, 3, 90, 120) and y.shape == (2, 90, 120) and y.max() <= 11
    assert (dls.vocab, dls.c, dls.void_code) == (CAMVID_CODES, 12, 11)

def test_shared_camvid_is_clean(camvid):
    rep = check_dataset(camvid, decode_images=False)
    assert rep.ok and rep.n_pairs == 468, str(rep)
    assert len(mess_dls(camvid).train_ds) == 367

def test_shared_camvid_sequences(camvid):
    src = seg_source(camvid)
    assert src.sequences() == {'0001TP': 62, '0006R0': 101, '0016E5': 305} and src.sequences('valid') == {'0016E5': 101}
    held = src.by_sequence('0006R0')
    assert {sequence_of(p[0]) for p in held.valid} == {'0006R0'} and '0006R0' not in held.sequences('train')
    assert len(held.train) + len(held.valid) == 468
    a, b = split_pairs(held.valid, 'halves')
    assert len(a) + len(b) == len(held.valid) and not set(a) & set(b) and max(a) < min(b)

# ---------------------------------------------------------------- embedded set and resolution order
def test_embedded_set(monkeypatch):
    monkeypatch.delenv('MESS_FAST_DATA', raising=False)
    p = mini_camvid_path()
    assert (p/'README.md').is_file() and 'Brostow' in (p/'README.md').read_text()
    dls = mess_dls(bs=4)
    assert (len(dls.train_ds), len(dls.valid_ds)) == (80, 24)
    assert dls.source.path == p and dls.vocab == CAMVID_CODES and dls.c == 12 and dls.void_code == 11
    x, y = dls.one_batch()
    assert x.shape == (4, 3, 120, 160) and y.shape == (4, 120, 160) and y.dtype == torch.long
    assert Image.open(dls.source.train[0][0]).size == (240, 180)
    assert check_dataset().ok

def test_resolution_order(tmp_path, monkeypatch):
    env_ds = segnet_ds(tmp_path/'env', n_train=3, n_val=1)
    arg_ds = segnet_ds(tmp_path/'arg', n_train=5, n_val=2)
    monkeypatch.delenv('MESS_FAST_DATA', raising=False)
    assert resolve_data_path() == mini_camvid_path()
    monkeypatch.setenv('MESS_FAST_DATA', str(env_ds))
    assert resolve_data_path() == env_ds
    assert len(mess_dls(bs=2).train_ds) == 3              # env beats the embedded set
    assert resolve_data_path(arg_ds) == arg_ds
    assert len(mess_dls(arg_ds, bs=2).train_ds) == 5      # explicit path beats env
    monkeypatch.setenv('MESS_FAST_DATA', str(tmp_path/'gone'))
    with pytest.raises(FileNotFoundError, match=r'gone: no such folder \(env MESS_FAST_DATA\)'): resolve_data_path()

def test_max_items_deterministic_and_spread():
    a, b = seg_source(max_items=7), seg_source(max_items=7)
    assert a.train == b.train and len(a.train) == 7 and len(a.valid) == 7
    assert {p[0].name[:6] for p in a.train} == {'0001TP', '0006R0', '0016E5'}   # spread over the sequences

# ---------------------------------------------------------------- the other layouts
def test_fastai_layout_void_in_the_middle(tmp_path):
    root = fastai_ds(tmp_path/'camvid_fastai')
    assert detect_layout(root) == 'fastai'
    dls = mess_dls(root, size=(12, 16), bs=2, augment=False)
    assert dls.vocab == ['Road', 'Car', 'Void', 'Tree', 'Sky'] and dls.c == 5 and dls.void_code == 2
    assert [p[0].name for p in dls.source.valid] == ['img4.png', 'img5.png']
    assert (len(dls.train_ds), len(dls.valid_ds)) == (4, 2)
    assert dls.source.train[0][1].name == 'img0_P.png'
    x, y = dls.one_batch()
    assert x.shape == (2, 3, 12, 16) and set(torch.unique(y).tolist()) <= {0, 1, 2, 3, 4}

def test_generic_folders_loader(tmp_path):
    root = tmp_path/'mine'
    for i in range(10):
        save_img(root/'rgb'/f'{i:02d}.jpg'); save_mask(root/'gt'/f'{i:02d}_mask.png', n=3)
    assert detect_layout(root) == 'folders'
    dls = mess_dls(root, size=(12, 16), bs=4, img_dir='rgb', mask_dir='gt', mask_suffix='_mask',
                   codes=['bg', 'cat', 'dog'], void_code=None, valid_pct=0.3, seed=1)
    assert dls.vocab == ['bg', 'cat', 'dog'] and dls.c == 3 and dls.void_code is None
    assert (len(dls.train_ds), len(dls.valid_ds)) == (7, 3)
    again = mess_dls(root, size=(12, 16), bs=4, img_dir='rgb', mask_dir='gt', mask_suffix='_mask',
                     codes=['bg', 'cat', 'dog'], void_code=None, valid_pct=0.3, seed=1)
    assert again.source.valid == dls.source.valid
    all_items(dls)
    # codes from a file, void by name
    (root/'codes.txt').write_text('bg\nignore\ncat\n')
    src = seg_source(root, img_dir='rgb', mask_dir='gt', mask_suffix='_mask', void_code='ignore')
    assert src.codes == ['bg', 'ignore', 'cat'] and src.void_code == 1 and src.codes_from == str(root/'codes.txt')

def test_grayscale_and_rgba_images_become_rgb(tmp_path):
    root = segnet_ds(tmp_path/'ds', n_train=2, n_val=1)
    save_img(root/'train'/'f0.png', mode='L', value=77)
    save_img(root/'train'/'f1.png', mode='RGBA', value=90)
    dls = mess_dls(root, size=(12, 16), bs=2, augment=False)
    imgs = {Path(fn).name: dls.train_ds[i][0] for i, (fn, _) in enumerate(dls.source.train)}
    assert {k: (v.mode, np.unique(np.asarray(v)).tolist()) for k, v in imgs.items()} == {'f0.png': ('RGB', [77]), 'f1.png': ('RGB', [90])}
    assert dls.one_batch()[0].shape == (2, 3, 12, 16)

# ---------------------------------------------------------------- bad input: each case, a real file, a clear message
def test_mask_value_not_a_class(tmp_path):
    root = segnet_ds(tmp_path/'ds')
    bad = save_mask(root/'trainannot'/'f2.png', value=200)
    dls = mess_dls(root, size=(12, 16), bs=2, augment=False)   # listing is fine: values are checked on load
    with pytest.raises(DataError) as e: all_items(dls)
    msg = str(e.value)
    assert msg.startswith(str(bad)) and 'mask values 200 are not class codes' in msg and 'expected values 0..11 (12 codes, void = 11)' in msg
    with pytest.raises(DataError, match='mask values 200'):   # also while iterating batches
        for _ in dls.train: pass
    rep = check_dataset(root)
    assert [Path(p.file).name for p in rep] == ['f2.png', 'CAMVID_CODES']

def test_mask_value_error_crosses_worker_processes(tmp_path):
    root = segnet_ds(tmp_path/'ds', n_train=2, n_val=1)
    bad = save_mask(root/'trainannot'/'f1.png', value=255)
    dls = mess_dls(root, size=(12, 16), bs=2, augment=False, num_workers=1)
    with pytest.raises(Exception, match=f"{bad}: mask values 255 are not class codes"):
        for _ in dls.train: pass

def test_image_without_mask(tmp_path):
    root = segnet_ds(tmp_path/'ds')
    img = save_img(root/'train'/'lonely.png')
    with pytest.raises(DataError) as e: mess_dls(root)
    assert f"{img}: no mask for this image; expected {root/'trainannot'/'lonely'}.png" in str(e.value)

def test_mask_without_image(tmp_path):
    root = segnet_ds(tmp_path/'ds')
    m = save_mask(root/'valannot'/'orphan.png')
    with pytest.raises(DataError) as e: mess_dls(root)
    assert f"{m}: no image for this mask; expected {root/'val'/'orphan'}.<png|jpg|...>" in str(e.value)

def test_image_mask_size_mismatch(tmp_path):
    root = segnet_ds(tmp_path/'ds')
    m = save_mask(root/'trainannot'/'f1.png', h=6, w=8)
    with pytest.raises(DataError) as e: all_items(mess_dls(root, size=(12, 16), bs=2, augment=False))
    assert str(e.value) == f"{m}: mask is 8x6 (WxH) but its image {root/'train'/'f1.png'} is 16x12; expected the same size"
    assert any(p.file == str(m) and 'expected the same size' in p.problem for p in check_dataset(root))

def test_unreadable_image(tmp_path):
    root = segnet_ds(tmp_path/'ds')
    bad = root/'train'/'f3.png'
    bad.write_bytes(b'\x89PNG\r\n\x1a\n this is not really a png')
    with pytest.raises(DataError) as e: all_items(mess_dls(root, size=(12, 16), bs=2, augment=False))
    assert str(e.value).startswith(f"{bad}: cannot read image") and 'expected an image file' in str(e.value)
    # truncated (header fine, data cut off): check_dataset decodes fully and names it
    good = root/'train'/'f0.png'
    good.write_bytes(good.read_bytes()[:60])
    probs = {p.file: p.problem for p in check_dataset(root)}
    assert str(bad) in probs and str(good) in probs and 'cannot read image' in probs[str(good)]

def test_unreadable_and_colour_masks(tmp_path):
    root = segnet_ds(tmp_path/'ds')
    (root/'trainannot'/'f0.png').write_bytes(b'garbage')
    save_img(root/'trainannot'/'f1.png', mode='RGB')
    probs = {Path(p.file).name: p.problem for p in check_dataset(root)}
    assert probs['f0.png'].startswith('cannot read mask') and 'expected a single-channel 8-bit PNG' in probs['f0.png']
    assert probs['f1.png'].startswith('mask has mode RGB (3 channels); expected a single-channel 8-bit mask')

def test_empty_folders(tmp_path):
    (tmp_path/'empty').mkdir()
    with pytest.raises(DataError, match=f"{tmp_path/'empty'}: empty folder; expected a dataset"): mess_dls(tmp_path/'empty')
    root = segnet_ds(tmp_path/'ds')
    for f in (root/'val').iterdir(): f.unlink()
    with pytest.raises(DataError) as e: mess_dls(root)
    assert f"{root/'val'}: empty folder; expected image files" in str(e.value)

def test_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path/'nope'}: no such folder"): mess_dls(tmp_path/'nope')
    root = segnet_ds(tmp_path/'ds')
    for f in (root/'valannot').iterdir(): f.unlink()
    (root/'valannot').rmdir()
    with pytest.raises(DataError) as e: mess_dls(root)
    assert f"{root/'valannot'}: missing folder; expected SegNet layout: train/ trainannot/ val/ valannot/" in str(e.value)
    with pytest.raises(DataError, match=f"{root/'test'}: missing folder"): mess_dls(root, valid='test')
    fa = fastai_ds(tmp_path/'fa'); (fa/'valid.txt').unlink()
    with pytest.raises(DataError, match=f"{fa/'valid.txt'}: missing; expected the list of validation images"): mess_dls(fa)

def test_codes_do_not_match_masks(tmp_path):
    root = fastai_ds(tmp_path/'fa', codes=('Road', 'Void', 'Sky'))
    for i in range(6): save_mask(root/'labels'/f'img{i}_P.png', n=5)     # values 0..4, but only 3 codes
    with pytest.raises(DataError) as e: all_items(mess_dls(root, size=(12, 16), bs=2, augment=False))
    assert 'mask values 3, 4 are not class codes; expected values 0..2 (3 codes, void = 1)' in str(e.value)
    rep = check_dataset(root)
    summary = [p for p in rep if p.file == str(root/'codes.txt')]
    assert len(summary) == 1 and 'codes do not match the masks: 3 codes, void = 1 (values 0..2) but 6 mask(s) hold values up to 4' in summary[0].problem
    with pytest.raises(DataError, match='7 problem'): check_dataset(root, raise_errors=True)

def test_bad_codes(tmp_path):
    root = fastai_ds(tmp_path/'fa')
    (root/'codes.txt').write_text('Road\nCar\nRoad\n')
    with pytest.raises(DataError, match=r"codes.txt: duplicate class names \['Road'\]"): mess_dls(root)
    (root/'codes.txt').unlink()
    with pytest.raises(DataError, match=r"codes.txt: missing; expected a text file with one class name a line"): mess_dls(root)
    fastai_ds(tmp_path/'fb')
    with pytest.raises(DataError, match=r"void_code: 9 is out of range; expected an index 0..4"): mess_dls(tmp_path/'fb', void_code=9)
    (tmp_path/'fb'/'valid.txt').write_text('img5.png\nimg99.png\n')
    with pytest.raises(DataError, match=r"valid.txt: lists 'img99.png', which is not an image in images/"): mess_dls(tmp_path/'fb')

def test_check_dataset_reports_everything_at_once(tmp_path):
    root = segnet_ds(tmp_path/'ds', n_train=6, n_val=3)
    save_mask(root/'trainannot'/'f0.png', value=200)                  # not a class
    save_mask(root/'trainannot'/'f1.png', h=5, w=5)                    # wrong size
    (root/'train'/'f2.png').write_bytes(b'nope')                       # unreadable image
    (root/'trainannot'/'f3.png').unlink()                              # image without mask
    save_mask(root/'valannot'/'extra.png')                             # mask without image
    save_img(root/'valannot'/'f0.png')                                 # colour mask
    rep = check_dataset(root)
    assert not rep.ok and len(rep) == 7
    got = {(Path(p.file).parent.name, Path(p.file).name) for p in rep}
    assert got == {('trainannot', 'f0.png'), ('trainannot', 'f1.png'), ('train', 'f2.png'), ('train', 'f3.png'),
                   ('valannot', 'extra.png'), ('valannot', 'f0.png'), ('', 'CAMVID_CODES')}
    text = str(rep)
    rel = lambda s: s.replace(str(root) + '/', '')                     # the report names files relative to the dataset folder
    assert '7 problem(s)' in text and text.startswith(root.name) and all(rel(p.file) in text for p in rep)
    with pytest.raises(DataError) as e: check_dataset(root, raise_errors=True)
    assert all(rel(str(p)) in str(e.value) for p in rep)
    with pytest.raises(DataError, match='2 problem'):     # loading stops at the structural problems, listing them all
        mess_dls(root)

# ---------------------------------------------------------------- plotting helpers (smoke, from the installed module)
def test_plots_and_frequency():
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    dls = mess_dls(bs=2, max_items=4)
    fig = show_mess_batch(dls, n=2, ncols=2)
    assert len(fig.axes) == 2
    x, y = dls.train_ds[0]
    ax = show_overlay(x, np.asarray(y), dls.vocab, dls.void_code)
    assert ax.get_legend() is not None
    freq = class_frequency(dls, 'valid')
    assert list(freq.index) == CAMVID_CODES and abs(freq.sum() - 1) < 1e-9
    assert len(plot_class_frequency(freq, dls.void_code).patches) == 12
    plt.close('all')

# ---------------------------------------------------------------- camvid_path, sequences and splits
def test_camvid_path_resolution(tmp_path, monkeypatch):
    "$MESS_FAST_CAMVID, else fastai's CamVid (`URLs.CAMVID`, downloaded only if asked); no folder above the working directory is searched"
    from fastai.data import external
    ds = segnet_ds(tmp_path/'cv', n_train=2, n_val=1)
    monkeypatch.setenv('MESS_FAST_CAMVID', str(ds))
    assert camvid_path() == ds
    monkeypatch.setenv('MESS_FAST_CAMVID', str(tmp_path/'nowhere'))
    with pytest.raises(FileNotFoundError, match=r'nowhere: no CamVid here \(env MESS_FAST_CAMVID\)'): camvid_path()
    monkeypatch.delenv('MESS_FAST_CAMVID')
    fastai_home = tmp_path/'fastai'/'data'/'camvid'
    monkeypatch.setattr(external.URLs, 'path', staticmethod(lambda url='.', c_key='archive': fastai_home))
    got = []
    monkeypatch.setattr(external, 'untar_data', lambda url, *a, **k: got.append(url) or fastai_home)
    work = tmp_path/'a'/'checkout'; work.mkdir(parents=True)
    segnet_ds(tmp_path/'a'/'shared'/'data'/'camvid', n_train=2, n_val=1)
    monkeypatch.chdir(work)                                   # a CamVid beside the checkout is not looked for any more
    with pytest.raises(FileNotFoundError, match=r'Full CamVid not found: set MESS_FAST_CAMVID.*camvid_path\(download=True\)'): camvid_path()
    assert got == []                                          # no download unless asked
    assert camvid_path(download=True) == fastai_home and got == [external.URLs.CAMVID]
    fastai_ds(fastai_home)                                    # fastai's own copy, in its layout
    assert camvid_path() == fastai_home and len(got) == 1

def test_sequences_and_splits():
    src = seg_source()
    assert sequence_of('x/0016E5_07959.png') == '0016E5' and sequence_of(Path('Seq05VD_f00.png')) == 'Seq05VD'
    seqs = src.sequences()
    assert sum(seqs.values()) == 104 and set(seqs) == {'0001TP', '0006R0', '0016E5'} and list(seqs) == sorted(seqs)
    assert sum(src.sequences('valid').values()) == 24 and sum(src.sequences('train').values()) == 80
    by = src.by_sequence('0006R0')
    assert set(by.sequences('valid')) == {'0006R0'} and '0006R0' not in by.sequences('train')
    assert sorted(by.train + by.valid) == sorted(src.train + src.valid)
    only = src.by_sequence(['0006R0'], train=['0001TP'])
    assert set(only.sequences('train')) == {'0001TP'}
    with pytest.raises(DataError, match=r"no frames of sequence\(s\) \['XYZ'\]"): src.by_sequence('XYZ')
    with pytest.raises(ValueError, match='in both splits'): src.by_sequence('0006R0', train=['0006R0'])
    for how in ('halves', 'alternate'):
        a, b = split_pairs(src.valid, how)
        assert sorted(a + b) == sorted(src.valid) and not set(a) & set(b)
        assert {sequence_of(p[0]) for p in a} == {sequence_of(p[0]) for p in b} == set(src.sequences('valid'))
    a, b = split_pairs(src.valid, 'halves')
    for q in src.sequences('valid'):                            # first half of every sequence, then the second
        fa, fb = [p for p in a if sequence_of(p[0]) == q], [p for p in b if sequence_of(p[0]) == q]
        assert max(fa) < min(fb) and 0 <= len(fa) - len(fb) <= 1
    with pytest.raises(ValueError, match='how must be'): split_pairs(src.valid, 'random')

def test_dls_size_and_input_meta():
    dls = mess_dls(size=(48, 64), bs=2, max_items=4)
    assert dls.size == (48, 64) and mess_dls(size=40, bs=2, max_items=4).size == (40, 40)
    m = input_meta(dls)
    assert m == dict(size=[48, 64], mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), codes=CAMVID_CODES, void=11)
    import json; assert json.loads(json.dumps(m)) == m

def test_validation_batches_are_not_augmented():
    aug = mess_dls(size=(48, 64), bs=4, max_items=8, augment=True, seed=1)
    plain_ = mess_dls(size=(48, 64), bs=4, max_items=8, augment=False, seed=1)
    (xa, ya), (xp, yp) = aug.valid.one_batch(), plain_.valid.one_batch()
    assert torch.equal(xa, xp) and torch.equal(ya, yp)
    xt, _ = aug.train.new(shuffle=False).one_batch()
    xt0, _ = plain_.train.new(shuffle=False).one_batch()
    assert not torch.equal(xt, xt0)                             # the training set still is

def test_labelled_dl_and_image_test_dl(tmp_path):
    dls = mess_dls(size=(48, 64), bs=2, max_items=6)
    pairs = dls.source.valid[:3]
    dl = labelled_dl(dls, pairs)
    assert dl.bs == 1 and dl.void_code == 11 and dl.vocab == CAMVID_CODES
    xs, ys = zip(*[(x, y) for x, y in dl])
    vx, vy = dls.valid.one_batch()                                # the validation transforms, in order
    assert torch.equal(torch.cat(xs)[:2], vx[:2]) and torch.equal(torch.cat(ys)[:2], vy[:2])
    assert len(xs) == 3 and torch.cat(ys).shape == (3, 48, 64)
    b, = list(labelled_dl(dls, pairs, bs=3))
    assert torch.equal(b[0], torch.cat(xs))
    with pytest.raises(ValueError, match='No'): labelled_dl(dls, [])
    with pytest.raises(TypeError, match='Expected'): labelled_dl(dls, [pairs[0][0]])
    with pytest.raises(FileNotFoundError, match='gone.png'): labelled_dl(dls, [(tmp_path/'gone.png', pairs[0][1])])
    # image_test_dl: file paths or PIL images, the same preparation as validation
    x1, = image_test_dl(dls, [p[0] for p in pairs[:2]]).one_batch()
    assert torch.equal(x1, vx[:2])
    x2, = image_test_dl(dls, Image.open(pairs[0][0])).one_batch()
    assert torch.equal(x2[0], vx[0])
    with pytest.raises(FileNotFoundError, match='gone.png'): image_test_dl(dls, [tmp_path/'gone.png'])
    with pytest.raises(TypeError, match='Expected image file paths or PIL images'): image_test_dl(dls, [3])
    with pytest.raises(ValueError, match='No images'): image_test_dl(dls, [])

def test_prepare_image_matches_validation_transforms():
    "The numpy/PIL preparation of a deployed network equals fastai's validation pipeline (crop-resize, normalise)"
    from mess_fast.imaging import prepare_image
    for size in [(48, 64), (64, 48), (90, 120), (37, 53)]:
        dls = mess_dls(size=size, bs=2, max_items=2)
        x, _ = dls.valid.one_batch()
        for i, (img, _) in enumerate(dls.source.valid[:2]):
            a = torch.from_numpy(prepare_image(img, size))
            assert a.shape == (3, *size)
            torch.testing.assert_close(a, x[i], atol=1e-5, rtol=0)

def test_jpeg_masks_refused(tmp_path):
    "Bug 15 (user report): lossy JPEG masks were accepted silently (their labels are wrong along every edge)"
    root = segnet_ds(tmp_path/'ds')
    m = root/'trainannot'/'f1.png'
    Image.open(m).save(root/'trainannot'/'f1.jpg', quality=95); m.unlink()
    rep = check_dataset(root)
    assert any(p.file == str(root/'trainannot'/'f1.jpg') and 'lossy JPEG mask' in p.problem and 'JPEG' in p.problem for p in rep), str(rep)
    with pytest.raises(DataError, match=r'f1.jpg: lossy JPEG mask; expected a PNG'): mess_dls(root)
