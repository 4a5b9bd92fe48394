"""The wheel ships every module and the embedded mini CamVid, and an installed copy loads it away from the source tree.

Part of the normal pytest run (under 30 s): builds the wheel from a copy of the source tree (without build isolation
when setuptools is installed, so no network), installs it with --target into a temporary folder and imports it from there in a subprocess.
"""
import configparser, importlib.util, json, os, shutil, subprocess, sys, zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT/'mess_fast'
MINI = PKG/'data'/'camvid_mini'

def _can_build_here():
    "setuptools >= 70.1 (which has bdist_wheel built in), or an older one >= 64 plus the wheel package."
    try: from importlib.metadata import version; v = tuple(int(x) for x in version('setuptools').split('.')[:2])
    except Exception: return False
    return v >= (70, 1) or (v >= (64, 0) and importlib.util.find_spec('wheel') is not None)

@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('wheel')
    src = tmp/'src'
    src.mkdir()
    for f in ('setup.py', 'settings.ini', 'pyproject.toml', 'README.md', 'LICENSE', 'MANIFEST.in'):
        if (ROOT/f).exists(): shutil.copy(ROOT/f, src/f)
    shutil.copytree(PKG, src/'mess_fast', ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    # Without build isolation when setuptools is at hand (no network needed); else pip fetches it as usual.
    iso = ['--no-build-isolation'] if _can_build_here() else []
    r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', *iso, '-q', '-w', str(tmp/'dist'), str(src)],
                       capture_output=True, text=True, cwd=tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    whl, = (tmp/'dist').glob('mess_fast-*.whl')
    return whl

def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert 'mess_fast/__init__.py' in names
    modules = {f'mess_fast/{f.name}' for f in PKG.glob('*.py')}
    assert modules and modules <= names, f"modules missing from the wheel: {sorted(modules - names)}"
    data = {f'mess_fast/{f.relative_to(PKG).as_posix()}' for f in MINI.rglob('*') if f.is_file()}
    assert len(data) == 2 * (80 + 24) + 3          # images, masks, README.md, train.txt, val.txt
    assert data <= names, f"mini CamVid files missing from the wheel: {sorted(data - names)[:5]}"

def test_installed_wheel_loads_embedded_set(wheel, tmp_path):
    site = tmp_path/'site'
    r = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '-q', '--target', str(site), str(wheel)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    code = """
import json, mess_fast
from mess_fast.data import resolve_data_path, mini_camvid_path
from mess_fast.checks import check_dataset
from mess_fast.loaders import mess_dls
dls = mess_dls(bs=4, max_items=None)
x, y = dls.one_batch()
print(json.dumps(dict(file=mess_fast.__file__, path=str(resolve_data_path()), mini=str(mini_camvid_path()),
                      n=[len(dls.train_ds), len(dls.valid_ds)], c=dls.c, void=dls.void_code,
                      x=list(x.shape), y=list(y.shape), ok=check_dataset().ok)))
"""
    env = {k: v for k, v in os.environ.items() if k not in ('MESS_FAST_DATA', 'PYTHONPATH')}
    env['PYTHONPATH'] = str(site)
    r = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(res['file']).resolve().is_relative_to(site.resolve()), f"imported the source tree, not the wheel: {res['file']}"
    assert Path(res['path']) == Path(res['mini']) and Path(res['path']).resolve().is_relative_to(site.resolve())
    assert res['n'] == [80, 24] and res['c'] == 12 and res['void'] == 11
    assert res['x'] == [4, 3, 120, 160] and res['y'] == [4, 120, 160] and res['ok']

def test_entry_point_and_imaging_without_torch(wheel, tmp_path):
    "The wheel declares the `mess_fast` console script, and `mess_fast.imaging` works where torch and fastai are not installed"
    z = zipfile.ZipFile(wheel)
    ep, = [n for n in z.namelist() if n.endswith('.dist-info/entry_points.txt')]
    cp = configparser.ConfigParser(); cp.read_string(z.read(ep).decode())
    assert cp['console_scripts']['mess_fast'].strip() == 'mess_fast.cli:main'
    site = tmp_path/'site'
    r = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '-q', '--target', str(site), str(wheel)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    code = """
import sys
for m in ('torch', 'torchvision', 'fastai', 'fastcore', 'timm'): sys.modules[m] = None   # any import of them fails
import json, numpy as np
from PIL import Image
import mess_fast.imaging as im
a = np.random.default_rng(0).integers(0, 255, (90, 140, 3), dtype=np.uint8)
Image.fromarray(a).save('img.png')
x = im.prepare_image('img.png', (48, 64))
im.save_mask(np.arange(48 * 64).reshape(48, 64) % 5, 'm.png', palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], size=(90, 140))
m = Image.open('m.png')
print(json.dumps(dict(file=im.__file__, shape=list(x.shape), dtype=str(x.dtype), mask=[m.mode, *m.size],
                      loaded=sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'fastai') and sys.modules[k] is not None))))
"""
    env = {k: v for k, v in os.environ.items() if k not in ('MESS_FAST_DATA', 'PYTHONPATH')}
    env['PYTHONPATH'] = str(site)
    r = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(res['file']).resolve().is_relative_to(site.resolve())
    assert res['shape'] == [3, 48, 64] and res['dtype'] == 'float32' and res['mask'] == ['P', 140, 90] and res['loaded'] == []
    # and from the source tree, as the brief for deployment states it: torch and fastai unavailable
    r = subprocess.run([sys.executable, '-c', "import sys; sys.modules['torch'] = None; sys.modules['fastai'] = None; import mess_fast.imaging"],
                       cwd=ROOT, env={k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
