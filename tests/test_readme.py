"README.md is generated from nbs/index.ipynb, and its first commands are the ones CI runs."
import re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_readme_in_sync_with_index():
    r = subprocess.run([sys.executable, str(ROOT/'scripts'/'make_readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

def test_readme_commands_are_what_ci_runs():
    readme, ci = (ROOT/'README.md').read_text(), (ROOT/'.ci'/'run').read_text()
    blocks = re.findall(r'```sh\n(.*?)\n```', readme, flags=re.S)
    install, job, tests = blocks[0], blocks[1], blocks[2]            # install, then the contract: the main job and the tests
    assert 'pip install -e ".[dev]"' in install and job.strip() == 'mess_fast train'
    assert 'pip install -q -e ".[dev]"' in ci and '&& mess_fast train >' in ci
    for cmd in tests.split('&&'):
        tool = cmd.split()[0] if not cmd.strip().startswith('python') else 'pytest'
        assert tool.strip() in ci, f'{cmd!r} from README is not run by .ci/run'

def test_overview_figure_exists():
    assert (ROOT/'nbs'/'images'/'mess_overview.png').stat().st_size > 10_000

def test_readme_python_runs(tmp_path, monkeypatch):
    "The README's Python examples run as written, only made tiny (fewer frames, smaller images, one epoch per stage)"
    import matplotlib; matplotlib.use('Agg')
    code = '\n'.join(re.findall(r'```python\n(.*?)\n```', (ROOT/'README.md').read_text(), flags=re.S))
    for old, new in [('mess_dls(size=(120, 160))', 'mess_dls(size=(48, 64), max_items=8)'),
                     ('fit_mess(epochs1=20, epochs2=5)', "fit_mess(epochs1=1, epochs2=1, grid=('fcn-b0', 'aspp-crm-b0'))"),
                     ('profile_net(net, (120, 160))', 'profile_net(net, (48, 64), reps=2, warmup=1)')]:
        assert old in code, f'README no longer contains {old!r}: update this test'
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, 'README.md', 'exec'), {})
    assert [f.name for f in tmp_path.iterdir()] == ['mess_onnx']   # only the export it asks for (best epochs are kept in memory)
