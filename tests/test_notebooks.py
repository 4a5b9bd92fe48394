"""The notebooks a learner opens first run as opened: each executed top to bottom by a Jupyter kernel (nbconvert's
ExecutePreprocessor, what "Run All" does), on the quick path (no MESS_FAST_FULL), without an error. The tutorials run
here and not under `nbdev-test` (nbs/tutorials/.notest), so that CI runs each of them once."""
import nbformat, pytest
from pathlib import Path
from nbconvert.preprocessors import ExecutePreprocessor
from traitlets.config import Config

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
NOTEBOOKS = sorted((NBS/'tutorials').glob('*.ipynb')) + [NBS/n for n in ('index.ipynb', 'reproduction.ipynb', 'explorer.ipynb')]

def test_tutorials_are_left_to_this_test():
    assert (NBS/'tutorials'/'.notest').exists() and len(NOTEBOOKS) >= 6

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: str(p.relative_to(NBS)))
def test_runs_as_opened(nb, monkeypatch):
    monkeypatch.delenv('MESS_FAST_FULL', raising=False)
    book = nbformat.read(nb, as_version=4)
    recheck = Config({'KernelManager': {'client_class': 'mess_fast.explore.RecheckingKernelClient'}})   # never a missed reply
    ExecutePreprocessor(timeout=1800, kernel_name='python3', config=recheck).preprocess(book, {'metadata': {'path': str(nb.parent)}})   # raises on an error
    assert all(o.get('output_type') != 'error' for c in book.cells if c.cell_type == 'code' for o in c.get('outputs', []))
