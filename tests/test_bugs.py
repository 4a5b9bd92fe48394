"""One test per bug a new user reported (numbered as in their report). Every test here failed on the code before the fix.

The tests only use names that existed before the fix wherever they can (the command line, `mess_dls`, `mess_learner`,
`MESSNet`, `EarlyExitPredictor`, `LatencyProfile`), so that running this file against the old code shows the old behaviour.
"""
import json, os, re, shutil, socket, subprocess, sys, time
from pathlib import Path

import numpy as np, pytest, torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CODES = 12      # the CamVid codes (the default when a SegNet-layout dataset has no codes.txt)

# ---------------------------------------------------------------- helpers
from cli_helpers import cli, console, one_line_error

def segnet_ds(root, n_train=4, n_val=2, size=(36, 48)):
    "A tiny SegNet-layout dataset with CamVid codes: train/ trainannot/ val/ valannot/"
    rng = np.random.default_rng(0)
    h, w = size
    for split, n in (('train', n_train), ('val', n_val)):
        (root/split).mkdir(parents=True, exist_ok=True); (root/f'{split}annot').mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root/split/f'f{i}.png')
            Image.fromarray((np.arange(h * w).reshape(h, w) % CODES).astype(np.uint8), mode='L').save(root/f'{split}annot'/f'f{i}.png')
    return root

TINY = ['--size', '32,48', '--epochs1', '1', '--epochs2', '1', '--grid', 'fcn-b0', '--positions', '2']

@pytest.fixture(scope='module')
def dls():
    from mess_fast.data import mess_dls
    return mess_dls(size=(32, 48), bs=2, max_items=4, augment=False)

# ---------------------------------------------------------------- 1
def test_01_batch_size_one_is_a_clear_error(tmp_path, monkeypatch, dls):
    "`mess_fast train --bs 1` crashed in BatchNorm during the first epoch"
    from mess_fast.data import mess_dls
    from mess_fast.train import mess_learner
    with pytest.raises(ValueError, match='[Bb]atch size'): mess_learner(mess_dls(size=(32, 48), bs=1, max_items=4), positions=[2])
    monkeypatch.chdir(tmp_path)
    rc, out, err = cli('train', '--bs', '1', '--max-items', '2', '--out', 'run', *TINY)
    one_line_error(rc, err, '--bs', '2')
    assert not (tmp_path/'run').exists()

# ---------------------------------------------------------------- 2
def test_02_get_preds_without_early_exits(dls):
    "`learn.get_preds()` on `mess_learner(dls, positions=[])` failed with a KeyError"
    from mess_fast.train import mess_learner
    learn = mess_learner(dls, positions=[])
    preds, targs = learn.get_preds()
    assert list(preds) == ['final'] and preds['final'].shape == (len(dls.valid_ds), CODES, 32, 48) and targs.shape == (len(dls.valid_ds), 32, 48)

# ---------------------------------------------------------------- 3
@pytest.mark.parametrize('arch,os_,n', [('timm:convnext_atto', None, 12), ('timm:regnetx_002', None, None),
                                        ('timm:ghostnet_100', 32, None), ('timm:edgenext_xx_small', 32, None)])
def test_03_more_timm_backbones(arch, os_, n):
    "ConvNeXt, RegNet and GhostNet had no candidate exits ('No blocks of types ... found'); EdgeNeXt got an output_stride it does not take"
    pytest.importorskip('timm')
    from mess_fast.model import MESSNet
    probe = MESSNet(arch, n_classes=3, output_stride=os_)
    cands = probe.candidates
    assert len(cands) >= 4 and (n is None or len(cands) == n), cands
    strides = [c.stride for c in cands]
    assert strides == sorted(strides) and strides[-1] == (os_ or 16)
    mid = len(cands) // 2
    net = MESSNet(arch, n_classes=3, output_stride=os_, exits=['0:fcn-b0', f'{mid}:aspp-crm-b0']).eval()
    with torch.no_grad(): out = net(torch.randn(1, 3, 64, 96))
    assert list(out) == ['0:fcn-b0', f'{mid}:aspp-crm-b0', 'final'] and all(v.shape == (1, 3, 64, 96) for v in out.values())
    if arch == 'timm:edgenext_xx_small':                    # asking for a stride it cannot give: a clear error
        with pytest.raises(ValueError, match=r"'edgenext_xx_small' does not support output_stride=16.*output_stride=32"):
            MESSNet(arch, n_classes=3, output_stride=16)

# ---------------------------------------------------------------- 4
def test_04_bad_validation_mask_found_before_training(tmp_path, monkeypatch):
    "A bad mask in the validation split was found only after a full training epoch"
    ds = segnet_ds(tmp_path/'ds')
    bad = ds/'valannot'/'f1.png'
    Image.fromarray(np.full((36, 48), 200, np.uint8), mode='L').save(bad)
    monkeypatch.chdir(tmp_path)
    t = time.time()
    rc, out, err = cli('train', '--data', ds, '--out', 'run', '--bs', '2', *TINY)
    assert rc == 1 and 'Traceback' not in err, err[-2000:]
    assert 'ds (segnet layout' in err and 'valannot/f1.png: mask values 200 are not class codes' in err   # the report: the folder, then its files
    assert 'epoch' not in out and not (tmp_path/'run').exists() and time.time() - t < 60

# ---------------------------------------------------------------- 5
def test_05_pretrained_timm_offline_fails_fast(monkeypatch, tmp_path):
    "Offline, `MESSNet('timm:resnet18', pretrained=True)` retried for ~50 s and ended in a raw Hugging Face Hub error"
    pytest.importorskip('timm')
    import huggingface_hub.constants as hc
    for v in ('HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy', 'HF_HUB_OFFLINE'): monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv('HF_HOME', str(tmp_path/'hf')); monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path/'hf'/'hub'))
    monkeypatch.setattr(hc, 'HF_HUB_CACHE', str(tmp_path/'hf'/'hub'), raising=False)   # read at import: the env alone is too late
    def no_net(*a, **k): raise OSError('network is unreachable (simulated)')
    monkeypatch.setattr(socket, 'create_connection', no_net)
    monkeypatch.setattr(socket, 'getaddrinfo', no_net)
    from mess_fast.model import MESSNet
    t = time.time()
    with pytest.raises(RuntimeError, match=r"Could not get pretrained weights for 'timm:resnet18'.*offline.*pretrained=False"):
        MESSNet('timm:resnet18', pretrained=True)
    assert time.time() - t < 10
    # the checks behind it
    import timm
    from mess_fast import model as M
    _reachable, _timm_cached = getattr(M, 'reachable', None) or M._reachable, M._timm_cached   # public since the fix
    assert not _reachable('huggingface.co')
    monkeypatch.setenv('HTTPS_PROXY', 'http://proxy.invalid:3128')
    assert _reachable('huggingface.co')                       # behind a proxy we cannot tell: try the download
    monkeypatch.delenv('HTTPS_PROXY')
    class _Conn:
        def close(self): pass
    monkeypatch.setattr(socket, 'create_connection', lambda *a, **k: _Conn())
    assert _reachable('huggingface.co')
    m = timm.create_model('resnet18', pretrained=False, features_only=True)
    assert not _timm_cached(m)
    repo = m.pretrained_cfg['hf_hub_id']
    snap = tmp_path/'hf'/'hub'/f"models--{repo.replace('/', '--')}"
    (snap/'snapshots'/'abc123').mkdir(parents=True); (snap/'refs').mkdir()
    (snap/'refs'/'main').write_text('abc123'); (snap/'snapshots'/'abc123'/'model.safetensors').write_bytes(b'x')
    assert _timm_cached(m)                                    # cached weights: no need for the network

# ---------------------------------------------------------------- 6
def test_06_user_errors_are_one_line(tmp_path, monkeypatch):
    "Missing --data folder, unknown --arch, --output-stride 7, --max-items 0 printed tracebacks"
    r = console('train', '--data', tmp_path/'nope', '--out', tmp_path/'run', cwd=tmp_path)
    one_line_error(r.returncode, r.stderr, 'nope')
    monkeypatch.chdir(tmp_path)
    for args, words in [(['--arch', 'resnet19'], ['--arch', 'resnet19']), (['--output-stride', '7'], ['--output-stride', '7']),
                        (['--max-items', '0'], ['--max-items', '0'])]:
        rc, out, err = cli('train', '--out', 'run', *args, *TINY)
        one_line_error(rc, err, *words)
    assert not (tmp_path/'run').exists()

# ---------------------------------------------------------------- 7
def test_07_learning_rates_must_be_positive(tmp_path, monkeypatch, dls):
    "`--lr1 -1` and `learn.fit_stage1(1, lr=-1)` were accepted"
    from mess_fast.train import mess_learner
    learn = mess_learner(dls, positions=[2])
    for lr in (-1, 0):
        with pytest.raises(ValueError, match='learning rate'): learn.fit_stage1(1, lr=lr)
    monkeypatch.chdir(tmp_path)
    for opt in ('--lr1', '--lr2'):
        rc, out, err = cli('train', opt, '-1', '--max-items', '2', '--out', 'run', *TINY)
        one_line_error(rc, err, opt, '-1')
    assert not (tmp_path/'run').exists()

# ---------------------------------------------------------------- 8
def test_08_no_output_folder_before_the_arguments_are_checked(tmp_path, monkeypatch):
    "A run that failed on its arguments left an empty output folder behind"
    monkeypatch.chdir(tmp_path)
    rc, out, err = cli('train', '--out', 'run', '--max-items', '2', '--bs', '2', '--size', '32,48', '--epochs1', '1', '--epochs2', '1',
                       '--grid', 'fcn-b0', '--positions', '99')        # only checkable once the backbone is built
    one_line_error(rc, err, '--positions', '99')
    (tmp_path/'taken').mkdir(); (tmp_path/'taken'/'x').write_text('x')
    rc, out, err = cli('train', '--out', 'taken', '--max-items', '2', '--stage1', 'some', *TINY)
    one_line_error(rc, err, '--stage1')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['taken']      # no run/, no taken-2/

# ---------------------------------------------------------------- 9
def test_09_fit_mess_writes_nothing_to_the_working_directory(tmp_path, monkeypatch, dls):
    "`fit_mess` (save_best) wrote its checkpoints into ./models"
    from mess_fast.train import mess_learner
    monkeypatch.chdir(tmp_path)
    learn = mess_learner(dls, positions=[2])
    learn.fit_mess(1, 1, grid=['fcn-b0'], positions=[2])
    assert list(tmp_path.iterdir()) == []

# ---------------------------------------------------------------- 10
PATTERNS = ['/wo' + 'rk/', '/ho' + 'me/']      # split so that this file does not match itself

@pytest.mark.parametrize('where', ['tests', 'mess_fast',
    'nbs',
    'scripts', 'bench/*.py'])
def test_10_no_absolute_paths(where):
    "The notebooks, package, tests, scripts and benchmarks referred to absolute paths of one machine"
    if shutil.which('git') is None or not (ROOT/'.git').exists(): pytest.skip('not a git checkout')
    args = [a for p in PATTERNS for a in ('-e', p)]
    r = subprocess.run(['git', 'grep', '-n', '-I', '--untracked', *args, '--', where], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode in (0, 1), r.stderr
    assert r.stdout == '', r.stdout[:3000]

# ---------------------------------------------------------------- 11
@pytest.fixture(scope='module')
def profile_file(tmp_path_factory):
    from mess_fast.model import MESSNet
    from mess_fast.profile import profile_net
    torch.manual_seed(0)
    net = MESSNet('resnet18', n_classes=3, output_stride=32, exits=['2:fcn-b0']).eval()
    p = tmp_path_factory.mktemp('prof')/'good.json'
    profile_net(net, (32, 32), reps=1, warmup=0, progress=False).save(p)
    return p

def _drop_meta(d): del d['meta']['n_candidates']; return d
def _drop_rows(d): del d['rows']; return d
def _half_rows(d): d['rows'] = d['rows'][:len(d['rows']) // 2]; return d
def _no_final(d): d['rows'] = [r for r in d['rows'] if r['key'] != 'final']; return d

@pytest.mark.parametrize('damage', ['binary', 'cut', 'meta', 'rows', 'half', 'final'])
def test_11_damaged_latency_profile(profile_file, tmp_path, damage):
    "Binary: UnicodeDecodeError; missing fields: KeyError; truncated rows: loaded silently. Now a ValueError naming the file."
    from mess_fast.profile import LatencyProfile
    LatencyProfile.load(profile_file)                        # the undamaged file loads
    p, text = tmp_path/'damaged.json', profile_file.read_text()
    if damage == 'binary': p.write_bytes(b'\x89PNG\r\n\x1a\n\x00\xff\xfe' * 50)
    elif damage == 'cut': p.write_text(text[:len(text) // 2])
    else: p.write_text(json.dumps(dict(meta=_drop_meta, rows=_drop_rows, half=_half_rows, final=_no_final)[damage](json.loads(text))))
    with pytest.raises(Exception) as e: LatencyProfile.load(p)
    assert type(e.value) is ValueError and str(p) in str(e.value) and 'not a valid mess_fast latency profile' in str(e.value), repr(e.value)

# ---------------------------------------------------------------- 12
@pytest.mark.parametrize('args', [['--help'], ['train', '--help']])
def test_12_help_prints_no_warning(tmp_path, args):
    "Every `mess_fast` call, even --help, printed a torch.jit.script FutureWarning"
    r = console(*args, cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == '', r.stderr[-3000:]
    assert 'usage: mess_fast' in r.stdout

# ---------------------------------------------------------------- 13
def _option_blocks(help_text):
    "The help of each option: its first line starts with '  -', continuation lines are indented further"
    blocks, cur = {}, None
    for l in help_text.splitlines():
        m = re.match(r'^  (-[-\w]+)', l)
        if m: cur = m[1]; blocks[cur] = l
        elif cur and l.startswith('    '): blocks[cur] += ' ' + l.strip()
        else: cur = None
    return blocks

def test_13_help_text_and_version():
    "`--no-evaluate` read 'Run the early-exit evaluation (default: True)'; `--positions` showed two defaults; -V was not accepted"
    import mess_fast
    rc, out, err = cli('-V')
    assert rc == 0 and out.strip() == f'mess_fast {mess_fast.__version__}'
    for cmd in ('train', 'search', 'predict'):
        rc, out, err = cli(cmd, '--help')
        assert rc == 0
        blocks = _option_blocks(out)
        assert '--out' in blocks or '--data' in blocks, out
        for opt, text in blocks.items():
            assert text.count('(default:') <= 1, (cmd, opt, text)
            if opt.startswith('--no-'):                       # a flag that turns something off must not read as turning it on
                assert '(default: True)' not in text and not re.search(r'\b(Run|Do|Enable)\b', text), (cmd, opt, text)

# ---------------------------------------------------------------- 14
def test_14_summary_with_the_readme_imports(tmp_path):
    "`learn.summary()` raised AttributeError unless `from fastai.vision.all import *` had run"
    code = ("from mess_fast.data import mess_dls; from mess_fast.train import mess_learner\n"
            "learn = mess_learner(mess_dls(size=(32, 48), bs=2, max_items=4), positions=[2])\n"
            "s = learn.summary()\nprint('SUMMARY', 'Total params' in str(s), 'MESSNet' in str(s))")
    env = {k: v for k, v in os.environ.items() if k != 'MESS_FAST_DATA'} | dict(MPLBACKEND='Agg', OMP_WAIT_POLICY='PASSIVE')
    r = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'SUMMARY True True' in r.stdout

# ---------------------------------------------------------------- 15
def test_15_jpeg_masks_are_refused(tmp_path):
    "Lossy JPEG masks were accepted silently (their labels are wrong along every edge)"
    from mess_fast.data import check_dataset, mess_dls, DataError
    ds = segnet_ds(tmp_path/'ds')
    png = ds/'trainannot'/'f2.png'
    Image.open(png).save(ds/'trainannot'/'f2.jpg', quality=90); png.unlink()
    rep = check_dataset(ds)
    assert any(p.file == str(ds/'trainannot'/'f2.jpg') and 'JPEG' in p.problem for p in rep), str(rep)
    with pytest.raises(DataError, match=r'f2.jpg: lossy JPEG mask'): mess_dls(ds, size=(32, 48), bs=2)

# ---------------------------------------------------------------- 16
def test_16_bad_classes_and_input_tensors():
    "`MESSNet('resnet18', n_classes=0)` was accepted; wrongly shaped or typed tensors gave a raw convolution error"
    from mess_fast.model import MESSNet
    from mess_fast.predict import EarlyExitPredictor
    for n in (0, 1):
        with pytest.raises(ValueError, match='n_classes'): MESSNet('resnet18', n_classes=n)
    torch.manual_seed(0)
    pred = EarlyExitPredictor(MESSNet('resnet18', n_classes=3, output_stride=32, exits=['2:fcn-b0']))
    assert pred.predict_batch(torch.zeros(1, 3, 64, 96))['masks'].shape == (1, 64, 96)
    for bad, words in [(torch.zeros(2, 1, 64, 96), ['(2, 1, 64, 96)', '(B, 3, H, W)']), (torch.zeros(64, 96), ['(64, 96)']),
                       (torch.zeros(1, 64, 96, 3), ['(1, 64, 96, 3)']), (torch.zeros(1, 3, 64, 96, dtype=torch.uint8), ['uint8'])]:
        with pytest.raises((ValueError, TypeError)) as e: pred.predict_batch(bad)
        assert all(w in str(e.value) for w in words) and 'Expected' in str(e.value), str(e.value)

# ---------------------------------------------------------------- 17
def test_17_export_refuses_to_overwrite(tmp_path, dls):
    "`learn.export` silently overwrote an existing file"
    from mess_fast.train import mess_learner
    learn = mess_learner(dls, positions=[2], path=tmp_path)
    learn.export('learner.pkl')
    before = (tmp_path/'learner.pkl').read_bytes()
    with pytest.raises(FileExistsError, match='learner.pkl'): learn.export('learner.pkl')
    assert (tmp_path/'learner.pkl').read_bytes() == before
    (tmp_path/'other.pkl').write_text('keep me')
    with pytest.raises(FileExistsError): learn.export(tmp_path/'other.pkl')
    assert (tmp_path/'other.pkl').read_text() == 'keep me'
    learn.export('learner.pkl', overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['learner.pkl', 'other.pkl']
