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
    setup, tests = blocks[0], blocks[1]
    assert 'pip install -e ".[dev]"' in setup and 'mess_fast train' in setup
    assert 'pip install -q -e ".[dev]"' in ci
    for cmd in tests.split('&&'):
        tool = cmd.split()[0] if not cmd.strip().startswith('python') else 'pytest'
        assert tool.strip() in ci, f'{cmd!r} from README is not run by .ci/run'

def test_overview_figure_exists():
    assert (ROOT/'nbs'/'images'/'mess_overview.png').stat().st_size > 10_000
